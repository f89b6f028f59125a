//! Facts about a host: one read-only script run over SSH, its `key=value` output parsed here.

use crate::api::host::{GpuFacts, HostFacts};

/// Prints one `key=value` per line. Only reads; every probe tolerates a missing tool.
pub const SCRIPT: &str = r#"
if [ -r /etc/os-release ]; then . /etc/os-release; echo "os=${PRETTY_NAME:-$NAME}"; fi
echo "kernel=$(uname -r)"
echo "cpus=$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)"
awk '/^MemTotal:/ {print "memory_kib=" $2}' /proc/meminfo
echo "disk_bytes=$(df -P -B1 / 2>/dev/null | awk 'NR==2 {print $2}')"
if command -v docker >/dev/null 2>&1; then echo docker=1; else echo docker=0; fi
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,temperature.gpu --format=csv,noheader,nounits 2>/dev/null | sed 's/^/gpu=/'
fi
"#;

/// Reads what [`SCRIPT`] printed. Unknown keys and unparsable values are skipped, so an odd
/// machine yields fewer facts rather than an error.
pub fn parse(output: &str) -> HostFacts {
    let mut f = HostFacts::default();
    for line in output.lines() {
        let Some((key, value)) = line.split_once('=') else { continue };
        let value = value.trim();
        match key.trim() {
            "os" if !value.is_empty() => f.os = Some(value.to_owned()),
            "kernel" if !value.is_empty() => f.kernel = Some(value.to_owned()),
            "cpus" => f.cpus = value.parse().ok(),
            "memory_kib" => f.memory_bytes = value.parse::<i64>().ok().and_then(|k| k.checked_mul(1024)),
            "disk_bytes" => f.disk_bytes = value.parse().ok(),
            "docker" => f.docker = value == "1",
            "gpu" => f.gpus.extend(gpu(value)),
            _ => {}
        }
    }
    f
}

/// One line of `nvidia-smi --query-gpu=name,memory.total,driver_version,temperature.gpu
/// --format=csv,noheader,nounits`, e.g. `NVIDIA H100 80GB HBM3, 81559, 550.54.15, 34`.
fn gpu(csv: &str) -> Option<GpuFacts> {
    let fields: Vec<&str> = csv.split(',').map(str::trim).collect();
    let name = fields.first().filter(|n| !n.is_empty())?;
    let number = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    Some(GpuFacts {
        name: (*name).to_owned(),
        memory_mib: number(1).map(|v| v as i64),
        driver: fields.get(2).filter(|d| !d.is_empty() && **d != "[N/A]").map(|d| (*d).to_owned()),
        temperature_celsius: number(3).map(|v| v as i32),
    })
}

/// A GPU temperature change smaller than this is not written to status: readings wander by a
/// degree or two from minute to minute, and each write would wake every watcher of Hosts.
pub const TEMPERATURE_STEP: i32 = 5;

/// `new` with volatile readings kept as `old` had them unless they moved by a step worth
/// writing (see [`TEMPERATURE_STEP`]).
pub fn steady(old: Option<&HostFacts>, mut new: HostFacts) -> HostFacts {
    let Some(old) = old else { return new };
    for (i, g) in new.gpus.iter_mut().enumerate() {
        let before = old.gpus.get(i).filter(|o| o.name == g.name).and_then(|o| o.temperature_celsius);
        if let (Some(b), Some(now)) = (before, g.temperature_celsius)
            && (now - b).abs() < TEMPERATURE_STEP
        {
            g.temperature_celsius = Some(b);
        }
    }
    new
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_vps() {
        let f = parse(
            "os=Debian GNU/Linux 12 (bookworm)\nkernel=6.1.0-18-amd64\ncpus=2\nmemory_kib=2014292\n\
             disk_bytes=21003583488\ndocker=0\n",
        );
        assert_eq!(f.os.as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(
            (f.cpus, f.memory_bytes, f.disk_bytes),
            (Some(2), Some(2014292 * 1024), Some(21003583488))
        );
        assert!(!f.docker && f.gpus.is_empty(), "no nvidia-smi: no GPUs, and no error");
    }

    #[test]
    fn gpus_from_nvidia_smi() {
        let f = parse(
            "docker=1\ngpu=NVIDIA H100 80GB HBM3, 81559, 550.54.15, 34\ngpu=NVIDIA H100 80GB HBM3, 81559, 550.54.15, [N/A]\n",
        );
        assert!(f.docker);
        assert_eq!(f.gpus.len(), 2);
        assert_eq!(f.gpus[0].memory_mib, Some(81559));
        assert_eq!(f.gpus[0].driver.as_deref(), Some("550.54.15"));
        assert_eq!((f.gpus[0].temperature_celsius, f.gpus[1].temperature_celsius), (Some(34), None));
    }

    /// What [`SCRIPT`] printed on a real GPU machine (the device tool's H100 box, 2026-11-22,
    /// `sh` with the script's text; see docs/hosts.md).
    #[test]
    fn a_real_h100_machine() {
        let f = parse(
            "os=Ubuntu 24.04.3 LTS\nkernel=6.18.44-fc-v657-gpu\ncpus=16\nmemory_kib=131981020\n\
             disk_bytes=270553174016\ndocker=0\ngpu=NVIDIA H100 80GB HBM3, 81559, 580.159.04, 50\n",
        );
        assert_eq!((f.os.as_deref(), f.cpus), (Some("Ubuntu 24.04.3 LTS"), Some(16)));
        assert_eq!(f.memory_bytes, Some(131981020 * 1024));
        let g = &f.gpus[..];
        assert_eq!(g.len(), 1);
        assert_eq!(
            (g[0].name.as_str(), g[0].memory_mib, g[0].driver.as_deref(), g[0].temperature_celsius),
            ("NVIDIA H100 80GB HBM3", Some(81559), Some("580.159.04"), Some(50))
        );
    }

    #[test]
    fn garbage_yields_fewer_facts_not_errors() {
        let f = parse("cpus=lots\nmemory_kib=\nnonsense\nos=\ngpu=\n");
        assert_eq!(f, HostFacts::default());
    }

    #[test]
    fn small_temperature_changes_do_not_change_the_facts() {
        let gpu = |t| crate::api::host::GpuFacts {
            name: "H100".into(),
            temperature_celsius: Some(t),
            ..Default::default()
        };
        let with = |t| HostFacts { gpus: vec![gpu(t)], ..Default::default() };
        assert_eq!(steady(Some(&with(50)), with(53)), with(50), "3 degrees: unchanged");
        assert_eq!(steady(Some(&with(50)), with(47)), with(50));
        assert_eq!(steady(Some(&with(50)), with(55)), with(55), "a step worth writing");
        assert_eq!(steady(None, with(53)), with(53));
        let other = HostFacts {
            gpus: vec![crate::api::host::GpuFacts {
                name: "A100".into(),
                temperature_celsius: Some(52),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(steady(Some(&with(50)), other.clone()), other, "another GPU: its own reading");
    }
}
