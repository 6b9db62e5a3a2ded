//! The sections of a `VmConfig` that add nothing to the plan and have a small shape, checked
//! as Cloud Hypervisor's serde reads them (types, required fields; unknown fields ignored):
//! `serial` (its `SerialConfig`), `debug_console` (`DebugConsoleConfig`, a field of x86_64
//! builds only), `tpm` (`TpmConfig`), `landlock_enable` and `landlock_rules`
//! (`LandlockConfig` entries). Their values are not checked.

use serde_json::value::RawValue;

use super::{ChObject, ConsoleMode, Object, Whole16};
use crate::error::Result;
use crate::spec::Arch;

/// The fields of Cloud Hypervisor's `CommonConsoleConfig`, the serial port's.
struct SerialObject;
impl ChObject for SerialObject {
    const KEYS: &'static [&'static str] = &["file", "mode", "socket"];
    const WHAT: &'static str = "a serial object";
}

/// Cloud Hypervisor's `DebugConsoleConfig`.
struct DebugConsoleObject;
impl ChObject for DebugConsoleObject {
    const KEYS: &'static [&'static str] = &["file", "mode", "iobase"];
    const WHAT: &'static str = "a debug_console object";
}

/// Cloud Hypervisor's `TpmConfig`.
struct TpmObject;
impl ChObject for TpmObject {
    const KEYS: &'static [&'static str] = &["socket"];
    const WHAT: &'static str = "a tpm object";
}

/// Cloud Hypervisor's `LandlockConfig`.
struct LandlockObject;
impl ChObject for LandlockObject {
    const KEYS: &'static [&'static str] = &["path", "access"];
    const WHAT: &'static str = "a landlock rule object";
}

/// Checks the sections of `vm` this module is about, for a build of `arch` (`debug_console`
/// is read on x86_64 only, as other builds ignore it), in the order of their fields in
/// `VmConfig`.
///
/// # Errors
/// [`Error::Spec`](crate::error::Error::Spec) at the first field of a type Cloud Hypervisor
/// refuses, or the object that lacks a field it requires.
pub(super) fn check(vm: &Object<'_>, arch: Arch) -> Result<()> {
    // Not `Option`s in `VmConfig`: `null` is refused.
    if let Some(raw) = vm.raw("serial") {
        let o = Object::read::<SerialObject>(vm.src, raw, "serial".to_owned())?;
        o.option::<String>("file")?;
        o.required::<ConsoleMode>("mode")?;
        o.option::<String>("socket")?;
    }
    if arch == Arch::X86_64
        && let Some(raw) = vm.raw("debug_console")
    {
        let o = Object::read::<DebugConsoleObject>(vm.src, raw, "debug_console".to_owned())?;
        o.option::<String>("file")?;
        o.required::<ConsoleMode>("mode")?;
        o.option::<Whole16>("iobase")?;
    }
    if let Some(raw) = vm.option::<&RawValue>("tpm")? {
        let o = Object::read::<TpmObject>(vm.src, raw, "tpm".to_owned())?;
        o.required::<String>("socket")?;
    }
    vm.flag("landlock_enable", false)?;
    for (i, raw) in vm
        .option::<Vec<&RawValue>>("landlock_rules")?
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let o = Object::read::<LandlockObject>(vm.src, raw, format!("landlock_rules[{i}]"))?;
        o.required::<String>("path")?;
        o.required::<String>("access")?;
    }
    Ok(())
}
