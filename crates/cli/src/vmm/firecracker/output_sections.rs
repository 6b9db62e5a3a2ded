//! Firecracker's `logger` and `metrics` sections: where it writes its log and its metrics.
//! Neither adds a device or memory; both are checked as Firecracker 1.16 reads them (its
//! `LoggerConfig` and `MetricsConfig`) and opens their files when it applies the file.

use serde::Deserialize;
use serde::de::{Deserializer, Visitor};

use super::{FcObject, fc_path, fc_path_not_empty, fc_path_without_nul};

/// The path of a file Firecracker opens when it applies the file: a string, neither empty nor
/// holding a NUL (no file has such a path on any host).
#[derive(Debug)]
pub(super) struct FcOpenedPath;

impl<'de> Deserialize<'de> for FcOpenedPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        fc_path(d, |path| {
            fc_path_not_empty(path)?;
            fc_path_without_nul(path)
        })
        .map(|()| FcOpenedPath)
    }
}

/// Firecracker's `LoggerConfig`, which refuses fields it does not know; every field may be
/// left out or `null`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a logger object")]
pub(super) struct FcLogger {
    #[allow(dead_code)]
    log_path: Option<FcOpenedPath>,
    #[allow(dead_code)]
    level: Option<FcLogLevel>,
    #[allow(dead_code)]
    show_level: Option<bool>,
    #[allow(dead_code)]
    show_log_origin: Option<bool>,
    #[allow(dead_code)]
    module: Option<IgnoredString>,
}

impl FcObject for FcLogger {
    const WHAT: &'static str = "a logger object";
}

/// Firecracker 1.16's `MetricsConfig`: `metrics_path` is required, and fields it does not know
/// are ignored (its main branch, 1.17.0-dev, adds `emit_id` and `properties`, which 1.16
/// ignores, so they are not read).
#[derive(Debug, Deserialize)]
#[serde(expecting = "a metrics object")]
pub(super) struct FcMetrics {
    #[allow(dead_code)]
    metrics_path: FcOpenedPath,
}

impl FcObject for FcMetrics {
    const WHAT: &'static str = "a metrics object";
}

/// Any string, not kept.
#[derive(Debug)]
pub(super) struct IgnoredString;

impl<'de> Deserialize<'de> for IgnoredString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        fc_path(d, |_| Ok(())).map(|()| IgnoredString)
    }
}

/// The log levels Firecracker's `LevelFilter` reads, compared after Rust's `to_lowercase`
/// (`warning` is `warn`).
const FC_LOG_LEVELS: [&str; 7] = ["off", "trace", "debug", "info", "warn", "warning", "error"];

/// A `logger.level`: a string that is one of [`FC_LOG_LEVELS`] in any case.
#[derive(Debug)]
struct FcLogLevel;

impl<'de> Deserialize<'de> for FcLogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FcLogLevel;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a log level name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<FcLogLevel, E> {
                // A level name is short: a longer string is none of them, whatever its case.
                if v.len() <= 4 * FC_LOG_LEVELS.iter().map(|l| l.len()).max().unwrap_or(0)
                    && FC_LOG_LEVELS.contains(&v.to_lowercase().as_str())
                {
                    return Ok(FcLogLevel);
                }
                Err(E::custom(format!(
                    "unknown log level `{}` (Firecracker reads off, trace, debug, info, warn or \
                     warning, and error, in any case)",
                    crate::render::escape(v)
                )))
            }
        }
        d.deserialize_str(V)
    }
}
