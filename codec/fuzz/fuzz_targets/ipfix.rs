//! Fuzz target: any bytes as one IPFIX message (version and length fields set), decoded twice
//! by one decoder (the second pass with the message's own templates learned). Must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    goflow_codec::decoder::decode_as_version(10, data);
});
