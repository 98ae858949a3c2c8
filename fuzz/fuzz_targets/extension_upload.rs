#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| invigilator_fuzz::extension_upload(data));
