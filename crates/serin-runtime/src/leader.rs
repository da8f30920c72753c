//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics: a candidate
//! takes the Lease when it is free or when its holder has not renewed it for a whole lease
//! duration, as measured on the candidate's own clock from when it first saw the current record
//! (so clock skew between nodes does not matter); the leader renews every `retry_period` and
//! stops leading when it could not renew within `renew_deadline`; on shutdown it releases the
//! Lease so a successor takes over at once.
//!
//! [`decide`] holds the timing rules and is pure; [`LeaderElector`] does the API calls.

use crate::api_error::Kind;
use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tokio::{sync::watch, time::Instant};

use crate::shutdown::Shutdown;

/// Timing of the election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a Lease is valid after its last renewal.
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long stops leading.
    pub renew_deadline: Duration,
    /// How often candidates retry and leaders renew.
    pub retry_period: Duration,
}

impl Default for LeaseTiming {
    /// client-go's defaults: 15 s, 10 s, 2 s.
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// The part of a Lease that the election reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// Current holder; `None` or empty when released.
    pub holder: Option<String>,
    /// The holder's lease duration.
    pub lease_duration: Duration,
    /// The Lease's resourceVersion: a new one means the holder renewed.
    pub resource_version: Option<String>,
}

impl LeaseRecord {
    fn from_lease(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        Self {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            lease_duration: Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(1) as u64),
            resource_version: lease.metadata.resource_version.clone(),
        }
    }
}

/// What a candidate does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseAction {
    /// No Lease exists: create one naming us.
    Create,
    /// Take the Lease: it is free, or its holder let it expire.
    Acquire,
    /// We hold it: renew.
    Renew,
    /// Someone else holds a valid Lease: look again after this long.
    Wait(Duration),
}

/// Decides the next step for `identity`, given the Lease (if any), how long ago this exact
/// record was first observed (`observed_for`), and the timing.
pub fn decide(
    record: Option<&LeaseRecord>,
    identity: &str,
    observed_for: Duration,
    timing: &LeaseTiming,
) -> LeaseAction {
    let Some(record) = record else {
        return LeaseAction::Create;
    };
    match record.holder.as_deref() {
        None => LeaseAction::Acquire,
        Some(holder) if holder == identity => LeaseAction::Renew,
        Some(_) if observed_for >= record.lease_duration => LeaseAction::Acquire,
        Some(_) => LeaseAction::Wait((record.lease_duration - observed_for).min(timing.retry_period)),
    }
}

/// Whether a leader whose last successful renewal was `since_renewal` ago may go on leading.
pub fn still_leading(since_renewal: Duration, timing: &LeaseTiming) -> bool {
    since_renewal < timing.renew_deadline
}

/// The outcome of one round of the election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Round {
    Leading,
    /// Another holder has the Lease: look again after this long.
    Waiting(Duration),
}

/// Runs the election for one identity on one Lease.
#[derive(Clone, Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: LeaseTiming,
}

impl LeaderElector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, timing: LeaseTiming) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            timing,
        }
    }

    /// Starts the election in the background. The receiver says whether this process leads; on
    /// `shutdown` a held Lease is released.
    pub fn spawn(self, shutdown: Shutdown) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(false);
        let handle = tokio::spawn(async move { self.run(tx, shutdown).await });
        (rx, handle)
    }

    async fn run(self, leading: watch::Sender<bool>, shutdown: Shutdown) {
        let mut observed: Option<(LeaseRecord, Instant)> = None;
        let mut last_renewal: Option<Instant> = None;
        loop {
            let wait = match self.step(&mut observed).await {
                Ok(Round::Leading) => {
                    last_renewal = Some(Instant::now());
                    if !*leading.borrow() {
                        tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
                    }
                    leading.send_replace(true);
                    self.timing.retry_period
                }
                Ok(Round::Waiting(wait)) => {
                    self.lose(&leading, "another holder has the lease");
                    // Look again when the observed Lease expires if that comes before the next
                    // retry: a dead leader is replaced within the lease duration of the last
                    // renewal this candidate saw.
                    wait
                }
                Err(err) => {
                    tracing::warn!(lease = %self.name, error = %err, "leader election request failed");
                    if let Some(at) = last_renewal
                        && !still_leading(at.elapsed(), &self.timing)
                    {
                        self.lose(&leading, "renew deadline passed");
                    }
                    self.timing.retry_period
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.wait() => break,
            }
        }
        if *leading.borrow() {
            leading.send_replace(false);
            if let Err(err) = self.release().await {
                tracing::warn!(lease = %self.name, error = %err, "releasing the lease failed");
            }
        }
    }

    fn lose(&self, leading: &watch::Sender<bool>, why: &str) {
        if *leading.borrow() {
            tracing::warn!(lease = %self.name, identity = %self.identity, why, "stopped leading");
        }
        leading.send_replace(false);
    }

    /// One round: whether we hold the Lease afterwards, and if not, when to look again.
    async fn step(&self, observed: &mut Option<(LeaseRecord, Instant)>) -> Result<Round, kube::Error> {
        let lease = self.api.get_opt(&self.name).await?;
        let record = lease.as_ref().map(LeaseRecord::from_lease);
        let now = Instant::now();
        let observed_for = match (&record, observed.as_ref()) {
            (Some(r), Some((seen, at))) if r == seen => now.duration_since(*at),
            (Some(r), _) => {
                *observed = Some((r.clone(), now));
                Duration::ZERO
            }
            (None, _) => Duration::ZERO,
        };
        let lost = Round::Waiting(self.timing.retry_period);
        match decide(record.as_ref(), &self.identity, observed_for, &self.timing) {
            LeaseAction::Wait(wait) => Ok(Round::Waiting(wait)),
            LeaseAction::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(None, true)),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(Round::Leading),
                    Err(e) if Kind::of(&e) == Kind::Conflict => Ok(lost),
                    Err(e) => Err(e),
                }
            }
            action @ (LeaseAction::Acquire | LeaseAction::Renew) => {
                let mut lease = lease.unwrap_or_default();
                let previous = lease.spec.take();
                let transitions = previous.as_ref().and_then(|s| s.lease_transitions).unwrap_or(0);
                let mut spec = self.spec(previous.as_ref(), action == LeaseAction::Acquire);
                spec.lease_transitions = Some(if action == LeaseAction::Acquire {
                    transitions + 1
                } else {
                    transitions
                });
                lease.spec = Some(spec);
                // replace carries the resourceVersion: a concurrent writer makes this a 409.
                match self.api.replace(&self.name, &PostParams::default(), &lease).await {
                    Ok(_) => Ok(Round::Leading),
                    Err(e) if Kind::of(&e) == Kind::Conflict => Ok(lost),
                    Err(e) => Err(e),
                }
            }
        }
    }

    fn spec(&self, previous: Option<&LeaseSpec>, acquiring: bool) -> LeaseSpec {
        let now = MicroTime(jiff::Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timing.lease_duration.as_secs().max(1) as i32),
            acquire_time: if acquiring {
                Some(now.clone())
            } else {
                previous.and_then(|p| p.acquire_time.clone())
            },
            renew_time: Some(now),
            lease_transitions: previous.and_then(|p| p.lease_transitions).or(Some(0)),
            ..Default::default()
        }
    }

    /// Gives the Lease up so that another candidate takes it without waiting for expiry.
    async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await?;
        tracing::info!(lease = %self.name, identity = %self.identity, "released the lease");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str) -> LeaseRecord {
        LeaseRecord {
            holder: Some(holder.to_owned()),
            lease_duration: Duration::from_secs(15),
            resource_version: Some("7".to_owned()),
        }
    }

    #[test]
    fn timing_rules() {
        let timing = LeaseTiming::default();
        let secs = Duration::from_secs;
        let released = LeaseRecord {
            holder: None,
            ..held_by("x")
        };
        let cases: Vec<(&str, Option<LeaseRecord>, Duration, LeaseAction)> = vec![
            ("no lease", None, secs(0), LeaseAction::Create),
            ("released lease", Some(released), secs(0), LeaseAction::Acquire),
            (
                "empty holder",
                Some(LeaseRecord {
                    holder: None,
                    ..held_by("")
                }),
                secs(0),
                LeaseAction::Acquire,
            ),
            ("ours", Some(held_by("me")), secs(0), LeaseAction::Renew),
            (
                "ours, even if stale",
                Some(held_by("me")),
                secs(60),
                LeaseAction::Renew,
            ),
            (
                "other, just seen",
                Some(held_by("other")),
                secs(0),
                LeaseAction::Wait(secs(2)),
            ),
            (
                "other, nearly expired",
                Some(held_by("other")),
                secs(14),
                LeaseAction::Wait(secs(1)),
            ),
            (
                "other, expired exactly",
                Some(held_by("other")),
                secs(15),
                LeaseAction::Acquire,
            ),
            (
                "other, long expired",
                Some(held_by("other")),
                secs(300),
                LeaseAction::Acquire,
            ),
        ];
        for (name, record, observed_for, want) in cases {
            assert_eq!(
                decide(record.as_ref(), "me", observed_for, &timing),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn short_lease_waits_no_longer_than_its_expiry() {
        let timing = LeaseTiming {
            retry_period: Duration::from_secs(10),
            ..LeaseTiming::default()
        };
        let record = LeaseRecord {
            lease_duration: Duration::from_secs(3),
            ..held_by("other")
        };
        assert_eq!(
            decide(Some(&record), "me", Duration::from_secs(1), &timing),
            LeaseAction::Wait(Duration::from_secs(2))
        );
    }

    #[test]
    fn renew_deadline() {
        let timing = LeaseTiming::default();
        assert!(still_leading(Duration::from_secs(0), &timing));
        assert!(still_leading(Duration::from_millis(9_999), &timing));
        assert!(!still_leading(Duration::from_secs(10), &timing));
    }

    #[test]
    fn record_reads_lease() {
        let lease = Lease {
            metadata: ObjectMeta {
                resource_version: Some("42".into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(String::new()),
                lease_duration_seconds: Some(1),
                ..Default::default()
            }),
        };
        let record = LeaseRecord::from_lease(&lease);
        assert_eq!(record.holder, None);
        assert_eq!(record.lease_duration, Duration::from_secs(1));
        assert_eq!(record.resource_version.as_deref(), Some("42"));
    }
}
