//! Compiles the Slint UI. Debug builds carry element ids and names, which
//! the UI tests (`tests/ui.rs`) use to find widgets.
#[cfg(feature = "gui")]
fn main() {
    let debug = std::env::var("PROFILE").is_ok_and(|p| p == "debug");
    let config = slint_build::CompilerConfiguration::new().with_debug_info(debug);
    slint_build::compile_with_config("ui/app.slint", config).expect("ui/app.slint must compile");
}

#[cfg(not(feature = "gui"))]
fn main() {}
