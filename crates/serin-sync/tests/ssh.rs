//! Acceptance 6: a GitRepository over ssh with the identity and known_hosts from a Secret,
//! against a local sshd (Debian's openssh-server) on 127.0.0.1; a wrong host key is refused.
//! Skips with a message when sshd is not installed (`make deps` installs it) or the tests do
//! not run as root (sshd logs the test in as the current user, root here).

mod support;

use std::{path::Path, process::Command, time::Duration};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, api::PostParams};
use serin_sync::api::GitRepository;
use serin_testbed::Testbed;
use support::*;

const SSHD: &str = "/usr/sbin/sshd";

struct Sshd {
    child: std::process::Child,
    port: u16,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) -> String {
    keygen_with(path, "")
}

fn keygen_with(path: &Path, passphrase: &str) -> String {
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            passphrase,
            "-C",
            "serin-sync-test",
            "-f",
        ])
        .arg(path)
        .output()
        .expect("ssh-keygen runs");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(path.with_extension("pub")).expect("public key")
}

fn start_sshd(dir: &Path, authorized: &str) -> Sshd {
    std::fs::create_dir_all("/run/sshd").expect("privilege separation directory");
    keygen(&dir.join("host_key"));
    std::fs::write(dir.join("authorized_keys"), authorized).expect("write");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nAuthorizedKeysFile {dir}/authorized_keys\nPidFile {dir}/sshd.pid\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n",
        dir = dir.display()
    );
    std::fs::write(dir.join("sshd_config"), config).expect("write");
    let child = Command::new(SSHD)
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stderr(std::fs::File::create(dir.join("sshd.log")).expect("log"))
        .spawn()
        .expect("sshd starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "sshd did not listen: {}",
            std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Sshd { child, port }
}

fn secret(name: &str, identity: &str, known_hosts: &str) -> Secret {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "flux-system"},
        "stringData": {"identity": identity, "known_hosts": known_hosts}
    }))
    .expect("secret")
}

fn secret_with_password(name: &str, identity: &str, known_hosts: &str, password: &str) -> Secret {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "flux-system"},
        "stringData": {"identity": identity, "known_hosts": known_hosts, "password": password}
    }))
    .expect("secret")
}

fn repository(name: &str, url: &str, secret: &str) -> String {
    format!(
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: {name}\n  namespace: flux-system\nspec:\n  interval: 1m\n  ref:\n    branch: main\n  url: {url}\n  secretRef:\n    name: {secret}\n"
    )
}

async fn ready_condition(api: &Api<GitRepository>, name: &str) -> Option<(String, String, String)> {
    let r = api.get_opt(name).await.ok()??;
    let c = r.status?.conditions.into_iter().find(|c| c.type_ == "Ready")?;
    Some((c.status, c.reason, c.message))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_with_keys_from_a_secret() {
    if !Path::new(SSHD).exists() {
        eprintln!("skipping: {SSHD} is missing (apt-get install openssh-server, or `make deps`)");
        return;
    }
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    if uid != "0" {
        eprintln!("skipping: the ssh test logs in as root and needs to run as root");
        return;
    }
    let keys = tempfile::tempdir().expect("tempdir");
    let client_pub = keygen(&keys.path().join("id"));
    let identity = std::fs::read_to_string(keys.path().join("id")).expect("identity");
    let locked_pub = keygen_with(&keys.path().join("locked"), "s3cret");
    let locked = std::fs::read_to_string(keys.path().join("locked")).expect("identity");
    let sshd = start_sshd(keys.path(), &format!("{client_pub}{locked_pub}"));
    let host_pub = std::fs::read_to_string(keys.path().join("host_key.pub")).expect("host key");
    let host_pub = host_pub.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let known_hosts = format!("[127.0.0.1]:{} {host_pub}\n", sshd.port);
    let wrong_pub = keygen(&keys.path().join("other_host_key"));
    let wrong_known_hosts = format!(
        "[127.0.0.1]:{} {}\n",
        sshd.port,
        wrong_pub.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
    );

    let tb = Testbed::start().await.expect("test bed");
    install_crds(&tb).await;
    create_namespace(&tb.client(), "flux-system").await;
    let repo = GitFixture::from_examples();
    let url = format!(
        "ssh://root@127.0.0.1:{}{}",
        sshd.port,
        repo.dir.path().join("repo.git").display()
    );
    let secrets: Api<Secret> = Api::namespaced(tb.client(), "flux-system");
    secrets
        .create(
            &PostParams::default(),
            &secret("ssh-good", &identity, &known_hosts),
        )
        .await
        .expect("secret");
    secrets
        .create(
            &PostParams::default(),
            &secret("ssh-wrong-host", &identity, &wrong_known_hosts),
        )
        .await
        .expect("secret");
    secrets
        .create(
            &PostParams::default(),
            &secret_with_password("ssh-locked", &locked, &known_hosts, "s3cret"),
        )
        .await
        .expect("secret");
    let _controllers = start_controllers(&tb);
    kubectl_apply(&tb, &repository("locked-key", &url, "ssh-locked"));
    kubectl_apply(&tb, &repository("over-ssh", &url, "ssh-good"));
    kubectl_apply(&tb, &repository("wrong-host-key", &url, "ssh-wrong-host"));

    let api: Api<GitRepository> = Api::namespaced(tb.client(), "flux-system");
    let revision = format!("main@sha1:{}", repo.head());
    let (_, reason, message) = eventually(Duration::from_secs(60), "the ssh source ready", || {
        let api = api.clone();
        async move {
            ready_condition(&api, "over-ssh")
                .await
                .filter(|(s, _, _)| s == "True")
        }
    })
    .await;
    assert_eq!(reason, "Succeeded");
    assert_eq!(message, format!("stored artifact for revision '{revision}'"));

    eventually(
        Duration::from_secs(60),
        "the source with a passphrase-protected key ready",
        || {
            let api = api.clone();
            async move {
                ready_condition(&api, "locked-key")
                    .await
                    .filter(|(s, _, _)| s == "True")
            }
        },
    )
    .await;

    let (_, reason, message) = eventually(Duration::from_secs(60), "the wrong host key refused", || {
        let api = api.clone();
        async move {
            ready_condition(&api, "wrong-host-key")
                .await
                .filter(|(s, _, _)| s == "False")
        }
    })
    .await;
    assert_eq!(reason, "GitOperationFailed");
    assert!(message.contains("Host key verification failed"), "{message}");
}
