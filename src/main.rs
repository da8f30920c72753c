use serin::api;

fn main() {
    for (_, yaml) in api::crds_yaml().unwrap() {
        print!("---\n{yaml}");
    }
}
