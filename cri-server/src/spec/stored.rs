//! A spec as the records keep it: the JSON text, not a parsed tree.
//!
//! Records are cloned on every lookup and the spec is read only by exec and verbose status,
//! so one string beats a `serde_json::Value` of a few hundred nodes, in memory and in time.
//! It serializes as the JSON object itself, so stored records read the same as before.

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// An OCI spec, as JSON text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StoredSpec(Box<RawValue>);

impl StoredSpec {
    /// The spec's JSON form.
    pub fn new(spec: &Spec) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(spec).map(Self)
    }

    /// Parses it back.
    pub fn parse(&self) -> Result<Spec, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    /// The JSON text.
    pub fn json(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for StoredSpec {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_the_old_record_form() {
        let spec = Spec::default();
        let stored = StoredSpec::new(&spec).expect("serialize");
        assert_eq!(stored.parse().expect("parse"), spec);
        // Records written with a `serde_json::Value` field hold the same JSON object.
        let old = serde_json::json!({ "spec": serde_json::to_value(&spec).expect("value") });
        #[derive(Deserialize)]
        struct Rec {
            spec: Option<StoredSpec>,
        }
        let rec: Rec = serde_json::from_value(old).expect("old form");
        assert_eq!(rec.spec.expect("spec").parse().expect("parse"), spec);
        // Verbose status embeds it in a `json!` tree.
        assert_eq!(
            serde_json::to_value(&stored).expect("to_value"),
            serde_json::to_value(&spec).expect("to_value")
        );
        let text = serde_json::to_string(&stored).expect("text");
        assert!(
            text.starts_with('{'),
            "serialized as the object itself: {text}"
        );
    }
}
