//! Small conversions between protobuf well-known types and std types, shared by the
//! client, the launcher and the events code.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protobuf::well_known_types::any::Any;
use protobuf::well_known_types::timestamp::Timestamp;
use protobuf::MessageField;

/// A protobuf timestamp as `SystemTime`. An absent timestamp, the protobuf zero value and
/// Go's zero `time.Time` (year 1, negative seconds) all mean "not set": a process never
/// exits before 1970.
pub(crate) fn from_timestamp(ts: &MessageField<Timestamp>) -> Option<SystemTime> {
    let ts = ts.as_ref()?;
    if ts.seconds < 0 || (ts.seconds == 0 && ts.nanos == 0) {
        return None;
    }
    let nanos = u32::try_from(ts.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)?;
    let secs = u64::try_from(ts.seconds).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// `SystemTime` as a protobuf timestamp; `None` stays absent.
pub(crate) fn to_timestamp(t: Option<SystemTime>) -> MessageField<Timestamp> {
    let Some(t) = t else {
        return MessageField::none();
    };
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    // subsec_nanos() < 1e9 always fits an i32.
    ts.nanos = i32::try_from(d.subsec_nanos()).unwrap_or(0);
    MessageField::some(ts)
}

/// An `Any` with the given type URL and raw value.
pub(crate) fn any(type_url: &str, value: Vec<u8>) -> Any {
    let mut a = Any::new();
    a.type_url = type_url.to_string();
    a.value = value;
    a
}

/// The protobuf full name in a type URL: the part after the last `/`, so that
/// `containerd.events.TaskExit`, `types.containerd.io/containerd.events.TaskExit` and
/// `type.googleapis.com/containerd.events.TaskExit` all match.
pub(crate) fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_and_zero_is_none() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(from_timestamp(&to_timestamp(Some(t))), Some(t));
        assert_eq!(from_timestamp(&to_timestamp(None)), None);
        let mut go_zero = Timestamp::new();
        go_zero.seconds = -62_135_596_800;
        assert_eq!(from_timestamp(&MessageField::some(go_zero)), None);
        assert_eq!(from_timestamp(&MessageField::some(Timestamp::new())), None);
    }

    #[test]
    fn type_names() {
        assert_eq!(
            type_name("containerd.events.TaskExit"),
            "containerd.events.TaskExit"
        );
        assert_eq!(
            type_name("types.containerd.io/containerd.events.TaskExit"),
            "containerd.events.TaskExit"
        );
    }
}
