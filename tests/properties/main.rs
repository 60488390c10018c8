//! Properties for any input, one test binary: proptest properties, and the
//! bolero fuzz targets (run alone, bounded, with
//! `BOLERO_RANDOM_TEST_TIME_MS=10000 cargo test --all-features --test properties fuzz::`).

mod fuzz;
mod properties;
