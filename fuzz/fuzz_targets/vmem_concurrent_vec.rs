//! Pushes (plain, through a `Pusher`, fallible, with a closure), in-place writes, reads and
//! clears on a small `ConcurrentVec` from one thread, against a map of index to value: every
//! index handed out is new and below the capacity, every read agrees, iteration yields the
//! published elements in index order, and a full vector refuses cleanly; nothing may panic or
//! leak (the values are heap strings, so a lost or doubled drop shows under the sanitizer).
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use memvisor_fuzz::Input;
use memvisor_vmem::vec::ConcurrentVec;

/// Operations per input: enough to fill the largest capacity through the `Pusher`.
const MAX_STEPS: usize = 512;

/// Records the outcome of one push in the model, checking it.
fn pushed(
    model: &mut BTreeMap<usize, String>,
    vec: &ConcurrentVec<String>,
    result: Result<usize, ()>,
    value: String,
) {
    match result {
        Ok(index) => {
            assert!(index < vec.capacity(), "index {index} past the capacity");
            assert!(
                model.insert(index, value).is_none(),
                "index {index} handed out twice"
            );
        }
        Err(()) => assert_eq!(vec.len(), vec.capacity(), "a push refused below capacity"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let capacity = 1 + usize::from(input.u16() % 2048);
    let Ok(mut vec) = ConcurrentVec::<String>::with_capacity(capacity) else {
        return;
    };
    let mut model: BTreeMap<usize, String> = BTreeMap::new();
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        let value = input.u16().to_string();
        match input.u8() % 6 {
            0 => {
                let result = vec.try_push(value.clone()).map_err(drop);
                pushed(&mut model, &vec, result, value);
            }
            1 => {
                let mut pusher = vec.pusher();
                for _ in 0..=input.u8() % 4 {
                    let result = pusher.try_push(value.clone()).map_err(drop);
                    pushed(&mut model, &vec, result, value.clone());
                }
            }
            2 => {
                let mut made = None;
                let result = vec.try_push_with(|i| {
                    made = Some(i.to_string());
                    i.to_string()
                });
                if let Ok(index) = result {
                    assert_eq!(
                        made.as_deref(),
                        Some(index.to_string().as_str()),
                        "closure index"
                    );
                }
                pushed(
                    &mut model,
                    &vec,
                    result.map_err(drop),
                    made.unwrap_or_default(),
                );
            }
            3 => {
                let index = usize::from(input.u16()) % (vec.capacity() + 2);
                assert_eq!(vec.get(index), model.get(&index), "get({index})");
            }
            4 => {
                if let Some((&index, _)) = model
                    .iter()
                    .nth(usize::from(input.u16()) % model.len().max(1))
                {
                    let slot = vec.get_mut(index).expect("a pushed element is there");
                    *slot = value.clone();
                    model.insert(index, value);
                }
            }
            _ => {
                if input.u8().is_multiple_of(16) {
                    vec.clear();
                    model.clear();
                }
            }
        }
        assert!(vec.len() >= model.len(), "len below the elements pushed");
    }
    for (index, value) in &model {
        assert_eq!(vec.get(*index), Some(value), "get({index}) at the end");
    }
    assert!(vec.iter().eq(model.values()), "iteration order");
});
