//! `memvisor init --arch ARCH` without `--from` prints the default spec for that architecture:
//! `--arch` is written into the printed spec as `arch`, so that it plans as `plan --arch ARCH`
//! plans the default spec.

mod common;

use common::run;

#[test]
fn init_without_from_writes_the_architecture_asked_for() {
    for arch in ["x86_64", "aarch64"] {
        let (code, printed, err) = run(&["init", "--arch", arch]);
        assert_eq!(code, 0, "{err}");
        let table: toml::Table = toml::from_str(&printed).unwrap();
        assert_eq!(table["arch"].as_str(), Some(arch), "{printed}");
        // The printed spec plans as the default spec does with `--arch`.
        let dir =
            std::env::temp_dir().join(format!("memvisor-init-arch-{}-{arch}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("vm.toml");
        std::fs::write(&file, &printed).unwrap();
        let (code, from_file, err) = run(&["plan", "--json", file.to_str().unwrap()]);
        assert_eq!(code, 0, "{err}");
        let (code, default, err) = run(&["plan", "--json", "--arch", arch]);
        assert_eq!(code, 0, "{err}");
        let mut from_file: serde_json::Value = serde_json::from_str(&from_file).unwrap();
        let mut default: serde_json::Value = serde_json::from_str(&default).unwrap();
        // The file's name is not the default spec's `<default>`; the name is written in it.
        from_file.as_object_mut().unwrap().remove("file");
        default.as_object_mut().unwrap().remove("file");
        assert_eq!(from_file, default, "{arch}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // Without `--arch`, the default spec as it is.
    let (code, printed, _) = run(&["init"]);
    assert_eq!(code, 0);
    assert_eq!(printed, memvisor_cli::spec::DEFAULT_SPEC);
}
