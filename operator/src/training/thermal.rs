//! The thermal guard, decided: pause when a GPU runs hotter than the job allows (or than the
//! GPU's own slowdown threshold less a margin, whichever is lower), resume only when every GPU
//! is below the resume threshold. The gap between the two is the hysteresis that keeps a GPU
//! at the edge from pausing and resuming every few seconds. Pure: readings come from a
//! [`Readings`] source (NVML or nvidia-smi on hosts, DCGM through Prometheus, a test's table).

use crate::api::training::Thermal;

/// Degrees below a GPU's own slowdown threshold at which Nova pauses first.
pub const SLOWDOWN_MARGIN: i32 = 5;

/// One GPU's reading.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    pub worker: u32,
    pub gpu: u32,
    pub celsius: i32,
    /// The GPU's slowdown threshold (NVML `NVML_TEMPERATURE_THRESHOLD_SLOWDOWN`), when known.
    pub slowdown_celsius: Option<i32>,
}

/// Where readings come from.
pub trait Readings {
    /// The newest reading of every GPU of the job; Err says why there is none.
    fn read(&mut self) -> Result<Vec<Reading>, String>;
}

#[derive(Clone, Debug, PartialEq)]
pub enum Guard {
    /// Freeze the workers; the message names the GPU and both temperatures.
    Pause(String),
    /// Thaw them.
    Resume(String),
    /// Stay as is.
    Hold,
}

/// The pause threshold of `r`.
fn limit(t: &Thermal, r: &Reading) -> i32 {
    r.slowdown_celsius.map_or(t.pause_above_celsius, |s| t.pause_above_celsius.min(s - SLOWDOWN_MARGIN))
}

/// What the guard does, `paused` being whether the job is paused now. No readings: hold.
pub fn decide(t: &Thermal, paused: bool, readings: &[Reading]) -> Guard {
    if readings.is_empty() {
        return Guard::Hold;
    }
    if !paused {
        let hot = readings.iter().filter(|r| r.celsius > limit(t, r)).max_by_key(|r| r.celsius - limit(t, r));
        return match hot {
            Some(r) => Guard::Pause(format!(
                "worker {} GPU {} is at {} °C, above {} °C; paused until every GPU is below {} °C",
                r.worker,
                r.gpu,
                r.celsius,
                limit(t, r),
                t.resume_below_celsius
            )),
            None => Guard::Hold,
        };
    }
    let hottest = readings.iter().max_by_key(|r| r.celsius).expect("not empty");
    if hottest.celsius < t.resume_below_celsius {
        Guard::Resume(format!(
            "every GPU is below {} °C (hottest {} °C): resumed",
            t.resume_below_celsius, hottest.celsius
        ))
    } else {
        Guard::Hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(worker: u32, celsius: i32) -> Reading {
        Reading { worker, gpu: 0, celsius, slowdown_celsius: None }
    }

    /// A table of readings over time drives the guard as a source would.
    struct Table(std::vec::IntoIter<Vec<Reading>>);

    impl Readings for Table {
        fn read(&mut self) -> Result<Vec<Reading>, String> {
            self.0.next().ok_or_else(|| "no more readings".into())
        }
    }

    #[test]
    fn pauses_above_85_and_resumes_only_below_70() {
        let t = Thermal::default();
        let temps = [60, 85, 86, 80, 72, 70, 69, 84, 90];
        let mut src =
            Table(temps.iter().map(|c| vec![gpu(0, 60), gpu(1, *c)]).collect::<Vec<_>>().into_iter());
        let mut paused = false;
        let mut trace = Vec::new();
        while let Ok(readings) = src.read() {
            match decide(&t, paused, &readings) {
                Guard::Pause(m) => {
                    assert!(m.contains("worker 1 GPU 0 is at"), "{m}");
                    paused = true
                }
                Guard::Resume(_) => paused = false,
                Guard::Hold => {}
            }
            trace.push(paused);
        }
        // 85 is not above 85; 86 pauses; 80, 72 and 70 stay paused; 69 resumes; 84 runs; 90 pauses.
        assert_eq!(trace, [false, false, true, true, true, true, false, false, true]);
    }

    #[test]
    fn the_gpus_own_slowdown_threshold_lowers_the_limit() {
        let t = Thermal::default();
        let r = Reading { worker: 2, gpu: 1, celsius: 80, slowdown_celsius: Some(83) };
        let Guard::Pause(m) = decide(&t, false, &[r]) else { panic!("80 °C is above 83 − 5") };
        assert_eq!(m, "worker 2 GPU 1 is at 80 °C, above 78 °C; paused until every GPU is below 70 °C");
    }

    #[test]
    fn no_readings_change_nothing() {
        assert_eq!(decide(&Thermal::default(), true, &[]), Guard::Hold);
        assert_eq!(decide(&Thermal::default(), false, &[]), Guard::Hold);
    }
}
