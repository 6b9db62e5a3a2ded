//! Pieces shared by the integration tests.

use proptest::prelude::ProptestConfig;

/// `cases` proptest cases, or `miri_cases` under Miri, where no failure file is written
/// (Miri's isolation has no working directory).
pub fn proptest_config(cases: u32, miri_cases: u32) -> ProptestConfig {
    if cfg!(miri) {
        ProptestConfig {
            cases: miri_cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    } else {
        ProptestConfig::with_cases(cases)
    }
}
