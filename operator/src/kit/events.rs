//! Events: best effort, notes cut to what the apiserver accepts.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};

/// The apiserver refuses an events.k8s.io note longer than 1 KiB.
pub const NOTE_LIMIT: usize = 1024;

/// `note` cut to at most `limit` bytes on a UTF-8 character boundary.
pub fn cut(note: &str, limit: usize) -> &str {
    if note.len() <= limit {
        return note;
    }
    let mut end = limit;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    &note[..end]
}

/// Records an event on `obj`; failing to record one is logged and never fails the reconcile.
pub async fn publish(
    recorder: &Recorder,
    obj: &ObjectReference,
    action: &str,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: (!note.is_empty()).then(|| cut(note, NOTE_LIMIT).to_owned()),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, obj).await {
        tracing::warn!(error = %e, "could not publish an event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_cut_on_a_character_boundary() {
        assert_eq!(cut("short", 1024), "short");
        let long = "é".repeat(600); // 1200 bytes, 2 per character
        let c = cut(&long, NOTE_LIMIT);
        assert_eq!(c.len(), 1024);
        let odd = format!("a{long}");
        let c = cut(&odd, NOTE_LIMIT);
        assert_eq!(c.len(), 1023, "never half a character");
        assert!(c.chars().all(|ch| ch == 'a' || ch == 'é'));
    }
}
