//! The config file: any text. Parsing and validation never panic; a config that
//! validates yields a pipeline, listen addresses that parse, and limits that hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::config::{parse_addr, Config};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text) else {
        return;
    };
    let Ok(config) = config.validate() else {
        return;
    };
    assert!(parse_addr("listen", &config.listen).is_ok());
    assert!(parse_addr("admin_listen", &config.admin_listen).is_ok());
    assert!(config.limits.max_connections > 0 && config.limits.max_in_flight > 0);
    assert!(config.worker_count() >= 1);
    let pipeline = config.pipeline();
    assert!(
        pipeline.is_ok(),
        "a validated config has a pipeline: {pipeline:?}"
    );
});
