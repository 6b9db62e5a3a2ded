//! Firecracker's static CPU templates are its build's architecture's (`StaticCpuTemplate`):
//! `C3`, `T2`, `T2S`, `T2CL`, `T2A` on x86_64, `V1N1` on aarch64, `None` on both. A template
//! of the other architecture is an unknown variant to Firecracker, which refuses the file: the
//! conversion for that architecture (`--arch`) refuses it too, at `cpu_template`.

mod common;

use common::{binary, scratch};

/// Runs `memvisor plan --from firecracker --arch arch` on a file `name`-`arch`.json whose
/// `cpu_template` is `template` (each test its own `name`, as tests run at once).
fn plan(name: &str, template: &str, arch: &str) -> std::process::Output {
    let path = scratch(&format!("{name}-{arch}.json"));
    std::fs::write(
        &path,
        format!(
            r#"{{"boot-source": {{"kernel_image_path": "vmlinux"}}, "drives": [],
"machine-config": {{"vcpu_count": 2, "mem_size_mib": 128, "cpu_template": {template}}}}}"#
        ),
    )
    .unwrap();
    binary(&[
        "plan",
        "--from",
        "firecracker",
        "--arch",
        arch,
        path.to_str().unwrap(),
    ])
}

#[test]
fn firecracker_cpu_template_of_the_other_architecture_is_refused() {
    let x86 = ["\"C3\"", "\"T2\"", "\"T2S\"", "\"T2CL\"", "\"T2A\""];
    let arm = ["\"V1N1\""];
    for (arch, taken, refused) in [
        ("x86_64", &x86[..], &arm[..]),
        ("aarch64", &arm[..], &x86[..]),
    ] {
        for t in taken.iter().chain(&["\"None\"", "null"]) {
            let out = plan("fc-cpu-template", t, arch);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{arch} {t}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for t in refused {
            let out = plan("fc-cpu-template", t, arch);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{arch} {t}: {err}");
            assert!(out.stdout.is_empty());
            assert!(
                err.starts_with("error: machine-config.cpu_template: "),
                "{arch} {t}: {err}"
            );
            assert!(err.contains(arch), "{arch} {t}: {err}");
            // Underlined where it is written.
            assert!(err.contains(":2:74\n"), "{arch} {t}: {err}");
        }
    }
}

/// A name that is no static template of either architecture (`none`, `t2`: Firecracker reads
/// them case-sensitively) is refused at its value, and the error names each template with the
/// architecture it is for, so that it does not offer one the conversion's architecture refuses.
#[test]
fn firecracker_unknown_cpu_template_is_refused_naming_each_template_with_its_architecture() {
    for arch in ["x86_64", "aarch64"] {
        for t in ["\"none\"", "\"t2\"", "\"M5\""] {
            let out = plan("fc-cpu-template-unknown", t, arch);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{arch} {t}: {err}");
            assert!(
                err.starts_with("error: machine-config.cpu_template: "),
                "{arch} {t}: {err}"
            );
            assert!(err.contains(&format!("unknown variant `{}`", t.trim_matches('"'))));
            for named in [
                "x86_64's `C3`, `T2`, `T2S`, `T2CL`, `T2A`",
                "aarch64's `V1N1`",
                "`None` on both",
            ] {
                assert!(err.contains(named), "{arch} {t}: {named} not in {err}");
            }
            assert!(err.contains(":2:74\n"), "{arch} {t}: {err}");
        }
    }
}
