//! core/v1 Events as client-go's recorder writes them: one Event per (object, type, reason,
//! message), whose count and last timestamp rise when it repeats within ten minutes, instead of a
//! new Event each time. Failures to record are logged, never fatal. Does I/O (the API).

use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::{Event, EventSource, ObjectReference},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;

/// How long a repeated event counts into the previous one (client-go's `EventCorrelator`).
pub const SERIES_WINDOW: Duration = Duration::from_secs(10 * 60);
/// The longest message an Event keeps.
const MAX_MESSAGE: usize = 1024;

/// One event to record.
#[derive(Clone, Copy, Debug)]
pub struct EventRecord<'a> {
    pub object: &'a ObjectReference,
    /// `source.component` (Flagger's `flagger`, Flux's `kustomize-controller`).
    pub component: &'a str,
    /// `reportingComponent`.
    pub reporting_component: &'a str,
    pub warning: bool,
    pub reason: &'a str,
    pub message: &'a str,
}

/// An Event recorded lately: its name, its count and when it was last recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub name: String,
    pub count: i32,
    pub seen: Instant,
}

type Key = (String, bool, String, String);

/// The Events recorded lately, and when the expired ones were last dropped.
#[derive(Debug, Default)]
struct Series {
    recorded: HashMap<Key, Recorded>,
    pruned: Option<Instant>,
}

/// How often the expired entries of the series are dropped (dropping them on every event would
/// scan every entry per event: quadratic with thousands of objects).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

impl Series {
    fn insert(&mut self, key: Key, recorded: Recorded) {
        let now = recorded.seen;
        if self.pruned.is_none_or(|at| now.duration_since(at) >= PRUNE_EVERY) {
            self.recorded
                .retain(|_, r| now.duration_since(r.seen) < SERIES_WINDOW);
            self.pruned = Some(now);
        }
        self.recorded.insert(key, recorded);
    }
}

fn series() -> &'static Mutex<Series> {
    static SERIES: OnceLock<Mutex<Series>> = OnceLock::new();
    SERIES.get_or_init(Default::default)
}

/// What to do with an event, given the one recorded last with the same key: `None` creates a new
/// Event, `Some` raises that one's count.
pub fn repeat_of(previous: Option<&Recorded>, now: Instant) -> Option<Recorded> {
    previous
        .filter(|p| now.duration_since(p.seen) < SERIES_WINDOW)
        .map(|p| Recorded {
            count: p.count.saturating_add(1),
            seen: now,
            name: p.name.clone(),
        })
}

/// Records an event on its object, or raises the count of the Event it repeats.
pub async fn record(client: &Client, e: EventRecord<'_>) {
    let ns = e.object.namespace.clone().unwrap_or_else(|| "default".into());
    let name = e.object.name.clone().unwrap_or_default();
    let message: String = e.message.chars().take(MAX_MESSAGE).collect();
    let object_key = e
        .object
        .uid
        .clone()
        .unwrap_or_else(|| format!("{}/{ns}/{name}", e.object.kind.as_deref().unwrap_or_default()));
    let key: Key = (object_key, e.warning, e.reason.to_owned(), message.clone());
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    let now = Time(jiff::Timestamp::now());
    let seen = Instant::now();
    let repeat = repeat_of(
        series()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .recorded
            .get(&key),
        seen,
    );
    let recorded = match repeat {
        Some(repeat) => {
            let patch = json!({"count": repeat.count, "lastTimestamp": now});
            match api
                .patch(&repeat.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => Some(repeat),
                // Gone (expired, deleted): record it anew.
                Err(_) => create(&api, &e, &ns, &name, &message, &now).await,
            }
        }
        None => create(&api, &e, &ns, &name, &message, &now).await,
    };
    if let Some(recorded) = recorded {
        series()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, recorded);
    }
}

async fn create(
    api: &Api<Event>,
    e: &EventRecord<'_>,
    ns: &str,
    name: &str,
    message: &str,
    now: &Time,
) -> Option<Recorded> {
    let event_name = format!(
        "{name}.{:x}",
        jiff::Timestamp::now().as_nanosecond() as u128 + u128::from(rand::random::<u16>())
    );
    let event = Event {
        metadata: ObjectMeta {
            name: Some(event_name.clone()),
            namespace: Some(ns.to_owned()),
            ..Default::default()
        },
        involved_object: e.object.clone(),
        reason: Some(e.reason.to_owned()),
        message: Some(message.to_owned()),
        type_: Some(if e.warning { "Warning" } else { "Normal" }.into()),
        source: Some(EventSource {
            component: Some(e.component.to_owned()),
            host: None,
        }),
        reporting_component: Some(e.reporting_component.to_owned()),
        reporting_instance: Some(
            std::env::var("POD_NAME").unwrap_or_else(|_| e.reporting_component.to_owned()),
        ),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now.clone()),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &event).await {
        Ok(_) => Some(Recorded {
            name: event_name,
            count: 1,
            seen: Instant::now(),
        }),
        Err(err) => {
            tracing::warn!(error = %err, "recording an event failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_within_ten_minutes_raises_the_count_of_the_event_it_repeats() {
        let t0 = Instant::now();
        let first = Recorded {
            name: "podinfo.1".into(),
            count: 1,
            seen: t0,
        };
        let again = repeat_of(Some(&first), t0 + Duration::from_secs(2)).expect("aggregated");
        assert_eq!((again.name.as_str(), again.count), ("podinfo.1", 2));
        let third = repeat_of(Some(&again), t0 + Duration::from_secs(9 * 60)).expect("aggregated");
        assert_eq!(third.count, 3, "the window runs from the last repeat");
        assert!(
            repeat_of(Some(&third), t0 + Duration::from_secs(20 * 60)).is_none(),
            "a new Event after ten quiet minutes"
        );
        assert!(repeat_of(None, t0).is_none());
    }

    #[test]
    fn expired_entries_are_dropped_once_a_minute_not_on_every_event() {
        let key = |n: &str| (n.to_owned(), false, "Synced".to_owned(), "m".to_owned());
        let at = |seen: Instant| Recorded {
            name: "e".into(),
            count: 1,
            seen,
        };
        let t0 = Instant::now();
        let mut series = Series::default();
        series.insert(key("old"), at(t0));
        let later = t0 + SERIES_WINDOW;
        series.pruned = Some(later);
        series.insert(key("a"), at(later));
        assert_eq!(series.recorded.len(), 2, "pruned a moment ago: nothing scanned");
        series.insert(key("b"), at(later + PRUNE_EVERY));
        assert!(!series.recorded.contains_key(&key("old")), "expired and dropped");
        assert_eq!(series.recorded.len(), 2);
    }
}
