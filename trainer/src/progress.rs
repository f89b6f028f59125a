//! The progress protocol: one JSON object per line, appended by any trainer to
//! `NOVA_PROGRESS_FILE` (or printed to stdout), read by Nova into status and metrics. Unknown
//! fields and lines that are not records are skipped, so a trainer may log other things there.

use std::io::Write;

use serde::{Deserialize, Serialize};

/// What a line reports.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Kind {
    /// A training step (not every step: every `logEvery`).
    Step,
    /// A checkpoint was written (`checkpoint` is its path).
    Checkpoint,
    /// An epoch ended (`validationLoss`, `validationAccuracy`).
    Epoch,
    /// The run ended (`reason`; `testAccuracy` for classifiers).
    Finished,
}

/// One line of the protocol.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub kind: Kind,
    /// Seconds since the Unix epoch.
    pub time: f64,
    /// The worker's rank (`RANK`), 0 for a single worker.
    #[serde(default)]
    pub worker: u32,
    /// Global step (optimizer updates done) and epoch (0-based).
    pub step: u64,
    pub epoch: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_accuracy: Option<f64>,
    /// Why the run finished: `completed`, `early-stopped` or `max-steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Record {
    pub fn new(kind: Kind, worker: u32, step: u64, epoch: u64) -> Self {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Self {
            kind,
            time,
            worker,
            step,
            epoch,
            loss: None,
            samples_per_second: None,
            checkpoint: None,
            validation_loss: None,
            validation_accuracy: None,
            test_accuracy: None,
            reason: None,
        }
    }

    /// A line of the protocol, or None for anything else.
    pub fn parse(line: &str) -> Option<Record> {
        let line = line.trim();
        line.starts_with('{').then(|| serde_json::from_str(line).ok()).flatten()
    }
}

/// Appends records, one flushed line each, so a reader never sees half a line of a live run.
pub struct Writer(Box<dyn Write + Send>);

impl Writer {
    pub fn to_file(path: &std::path::Path) -> std::io::Result<Self> {
        let f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self(Box::new(f)))
    }

    pub fn to_stdout() -> Self {
        Self(Box::new(std::io::stdout()))
    }

    pub fn write(&mut self, r: &Record) -> std::io::Result<()> {
        let mut line = serde_json::to_string(r).expect("plain struct");
        line.push('\n');
        self.0.write_all(line.as_bytes())?;
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_other_lines_are_skipped() {
        let mut r = Record::new(Kind::Checkpoint, 1, 500, 2);
        r.checkpoint = Some("/ckpt/step-0000000500.safetensors".into());
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.contains(r#""kind":"checkpoint""#) && !line.contains("loss"), "{line}");
        assert_eq!(Record::parse(&line), Some(r));
        assert_eq!(Record::parse("epoch 3 done"), None);
        assert_eq!(Record::parse(r#"{"kind":"nonsense","time":0,"step":1,"epoch":0}"#), None);
        let other = r#"{"kind":"step","time":1.5,"step":7,"epoch":0,"loss":0.25,"gpu":"x"}"#;
        assert_eq!(Record::parse(other).unwrap().loss, Some(0.25));
    }
}
