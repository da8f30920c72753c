//! Watch streams: events as JSON lines from a resourceVersion, bookmarks, and the end of a
//! stream when the test bed closes watches. Does I/O (HTTP streams).

use super::*;

pub(super) fn event_line(type_: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": type_, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn watch_response(
    server: &Arc<Server>,
    res: &ResourceInfo,
    ns: Option<&str>,
    query: &BTreeMap<String, String>,
    labels: LabelSelector,
    fields: FieldSelector,
    as_table: bool,
) -> Result<Response, ApiError> {
    let from = match query.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => WatchFrom::Now,
        Some(rv) => WatchFrom::Version(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?,
        ),
    };
    let send_initial = query.get("sendInitialEvents").is_some_and(|v| v == "true");
    let bookmarks = query.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let include = include_object(query);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let res = res.clone();
    let ns = ns.map(str::to_owned);
    let store = server.store.clone();
    let mut epoch = server.watch_epoch.subscribe();
    let start = match store.watch(
        &res,
        ns.as_deref(),
        if send_initial { WatchFrom::Now } else { from },
    ) {
        Ok(start) => Some(start),
        Err(err) if err.code == 410 => {
            // As the API server does: a 200 stream whose only event is the 410 error.
            let _ = tx.try_send(event_line("ERROR", &err.status()));
            None
        }
        Err(err) => return Err(err),
    };
    tokio::spawn(async move {
        let Some((initial, mut events, start_rv)) = start else {
            return;
        };
        let render = |obj: &Value| -> Value {
            if as_table {
                let rv = obj
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                table::table(&res, std::slice::from_ref(obj), &rv, include, None)
            } else {
                let mut o = obj.clone();
                o["apiVersion"] = json!(res.api_version());
                o["kind"] = json!(res.kind);
                o
            }
        };
        let matches = |obj: &Value| labels.matches(obj.pointer("/metadata/labels")) && fields.matches(obj);
        let mut last_rv = start_rv;
        for e in &initial {
            if matches(&e.object)
                && tx
                    .send(event_line(e.type_.as_str(), &render(&e.object)))
                    .await
                    .is_err()
            {
                return;
            }
            last_rv = last_rv.max(e.rv);
        }
        if send_initial && bookmarks {
            let mark = json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": {"resourceVersion": last_rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
            if tx.send(event_line("BOOKMARK", &mark)).await.is_err() {
                return;
            }
        }
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut bookmark_tick = tokio::time::interval(Duration::from_secs(1));
        bookmark_tick.tick().await;
        loop {
            let sleep_until =
                deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                received = events.recv() => match received {
                    Ok(e) => {
                        if e.rv <= last_rv {
                            continue;
                        }
                        last_rv = e.rv;
                        let in_scope = e.key.group == res.group && e.key.plural == res.plural && ns.as_ref().is_none_or(|n| &e.key.namespace == n);
                        if !in_scope || !matches(&e.object) {
                            continue;
                        }
                        let type_ = match e.type_ { EventType::Added => "ADDED", EventType::Modified => "MODIFIED", EventType::Deleted => "DELETED" };
                        if tx.send(event_line(type_, &render(&e.object))).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let err = ApiError::gone("the watch fell behind; relist");
                        let _ = tx.send(event_line("ERROR", &err.status())).await;
                        return;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = bookmark_tick.tick(), if bookmarks => {
                    let mark = json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": {"resourceVersion": last_rv.to_string()}});
                    if tx.send(event_line("BOOKMARK", &mark)).await.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep_until(sleep_until) => return,
                () = tx.closed() => return,
                _ = epoch.changed() => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("transfer-encoding", "chunked")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| ApiError::internal("cannot build the watch response").into_response()))
}
