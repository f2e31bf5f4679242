//! Fuzz target: any bytes as one NetFlow v5 datagram, decoded twice by one decoder (the second
//! pass with the datagram's own templates learned). Must never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    goflow_codec::decoder::decode_as_version(5, data);
});
