//! Pushes (plain, through a `Pusher`, fallible, with a closure) and reads on a small
//! `ConcurrentVec` from one thread, against a `std::vec::Vec` of what should be there: every
//! index handed out, every read and the published length must agree, and a full vector must
//! refuse cleanly; nothing may panic or leak (the values are heap strings, so a lost or doubled
//! drop shows under the sanitizer).
#![no_main]

use libfuzzer_sys::fuzz_target;
use memvisor_fuzz::Input;
use memvisor_vmem::vec::ConcurrentVec;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let capacity = 1 + usize::from(input.u16() % 2048);
    let Ok(mut vec) = ConcurrentVec::<String>::with_capacity(capacity) else {
        return;
    };
    let mut model: Vec<String> = Vec::new();
    while !input.is_empty() {
        let value = input.u16().to_string();
        let full = model.len() >= vec.capacity();
        match input.u8() % 6 {
            0 => match vec.try_push(value.clone()) {
                Ok(index) => {
                    assert_eq!(index, model.len(), "try_push index");
                    model.push(value);
                }
                Err(_) => assert!(full, "try_push refused below capacity"),
            },
            1 if !full => {
                let index = vec.pusher().push(value.clone());
                assert_eq!(index, model.len(), "Pusher::push index");
                model.push(value);
            }
            2 => match vec.try_push_with(|i| format!("{i}")) {
                Ok(index) => {
                    assert_eq!(index, model.len(), "try_push_with index");
                    model.push(index.to_string());
                }
                Err(_) => assert!(full, "try_push_with refused below capacity"),
            },
            3 => {
                let index = usize::from(input.u16()) % (model.len() + 2);
                assert_eq!(vec.get(index), model.get(index), "get({index})");
            }
            4 => {
                let index = usize::from(input.u16()) % (model.len() + 1);
                if let Some(slot) = vec.get_mut(index) {
                    *slot = value.clone();
                    model[index] = value;
                } else {
                    assert_eq!(index, model.len(), "get_mut({index}) missing");
                }
            }
            5 if input.u8() % 16 == 0 => {
                vec.clear();
                model.clear();
            }
            _ => {}
        }
        assert_eq!(vec.len(), model.len(), "len");
    }
    assert!(vec.iter().eq(model.iter()), "iteration order");
});
