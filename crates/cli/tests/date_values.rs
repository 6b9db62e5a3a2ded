//! A TOML date or time where a spec wants another type is refused naming what was written: the
//! TOML reader hands dates and times to serde as maps, which a spec never has there.

use memvisor_cli::spec::{Source, parse};

fn refused(text: &str) -> (String, Option<(usize, usize)>, String) {
    let err = parse(Source {
        origin: "vm.toml",
        text,
    })
    .unwrap_err();
    (err.field.clone(), err.position, err.problem.to_string())
}

#[test]
fn dates_and_times_are_named_as_written() {
    let rows = [
        (
            "phys_bits = 1979-05-27T07:32:00Z\n[memory]\nsize = 4096\n",
            "phys_bits",
            (1, 13),
            "invalid type: date-time `1979-05-27T07:32:00Z`, expected a whole number from 0 to \
             4294967295",
        ),
        (
            "arch = 07:32:00\n[memory]\nsize = 4096\n",
            "arch",
            (1, 8),
            "invalid type: date-time `07:32:00`, expected a string",
        ),
        (
            "[memory]\nsize = 1979-05-27\n",
            "memory.size",
            (2, 8),
            "invalid type: date-time `1979-05-27`, expected a size: an integer or a string such \
             as \"512MiB\" or \"0x1000\"",
        ),
        (
            "[memory]\nsize = 4096\ndontfork = 1979-05-27 07:32:00.999999-07:00\n",
            "memory.dontfork",
            (3, 12),
            "invalid type: date-time `1979-05-27 07:32:00.999999-07:00`, expected true or false",
        ),
        (
            "[memory]\nsize = 4096\n[[numa]]\nsize = 4096\nhost_nodes = [1979-05-27]\n",
            "numa[0].host_nodes[0]",
            (5, 15),
            "invalid type: date-time `1979-05-27`, expected a whole number from 0 to 4294967295",
        ),
        (
            "numa = 1979-05-27\n[memory]\nsize = 4096\n",
            "numa",
            (1, 8),
            "invalid type: date-time `1979-05-27`, expected a sequence",
        ),
    ];
    for (text, field, position, problem) in rows {
        assert_eq!(
            refused(text),
            (field.to_owned(), Some(position), problem.to_owned()),
            "{text}"
        );
    }
}

#[test]
fn tables_where_a_value_goes_are_still_maps() {
    for text in [
        "[memory]\nsize = 4096\nhuge_pages = {}\n",
        "[memory]\nsize = 4096\n[memory.huge_pages]\nx = 1\n",
    ] {
        let (field, _, problem) = refused(text);
        assert_eq!(field, "memory.huge_pages");
        assert_eq!(problem, "invalid type: map, expected a string", "{text}");
    }
}
