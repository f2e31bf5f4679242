//! Fuzz target: a framed sequence of datagrams from four exporters with advancing receive times
//! (see `decode_stream`), through one decoder with small cache limits so that limits, expiry
//! and withdrawal paths run. The callback and arena paths must agree; nothing may panic.
#![no_main]

use goflow_codec::DecoderConfig;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let config = DecoderConfig {
        template_ttl_secs: 600,
        max_templates_per_exporter: 8,
        max_templates_total: 16,
        max_fields_per_template: 64,
        max_fields_per_exporter: 256,
        max_fields_total: 512,
    };
    let (_, disagreements) = goflow_codec::decoder::decode_stream(data, config);
    assert_eq!(disagreements, 0, "callback and arena paths disagree");
});
