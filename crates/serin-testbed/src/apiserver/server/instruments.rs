//! The test instruments: `/testbed/requests` (counts) and `/testbed/faults` (injected
//! failures). No I/O.

use super::*;

pub(super) fn instrument_requests(server: &Server, method: &Method) -> Response {
    let mut requests = server.requests.lock().unwrap_or_else(|p| p.into_inner());
    if method == Method::DELETE {
        requests.clear();
        return ok(&json!({"requests": []}));
    }
    let rows: Vec<Value> = requests
        .iter()
        .map(|((verb, resource, agent), count)| json!({"verb": verb, "resource": resource, "userAgent": agent, "count": count}))
        .collect();
    ok(&json!({"requests": rows}))
}

pub(super) fn instrument_faults(server: &Server, method: &Method, body: &Bytes) -> Response {
    let mut faults = server.faults.lock().unwrap_or_else(|p| p.into_inner());
    match *method {
        Method::POST => match serde_json::from_slice::<Fault>(body) {
            Ok(fault) => {
                faults.push(fault);
                json_response(StatusCode::CREATED, &json!({"faults": *faults}))
            }
            Err(e) => ApiError::bad_request(format!(
                "a fault is {{verb, resource, count, status, delayMs}}: {e}"
            ))
            .into_response(),
        },
        Method::DELETE => {
            faults.clear();
            ok(&json!({"faults": []}))
        }
        _ => ok(&json!({"faults": *faults})),
    }
}
