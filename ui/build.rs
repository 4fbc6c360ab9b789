//! Compiles the apps' .slint files into Rust, with every translation catalogue in `lang/` bundled
//! into the program (no gettext at run time; the language is switched live).

fn main() {
    embed_deployment();
    let config = slint_build::CompilerConfiguration::new()
        .with_style("fluent".into())
        .with_bundled_translations("lang")
        // msgids without a per-component context: one sentence is translated once.
        .with_default_translation_context(slint_build::DefaultTranslationContext::None)
        // Fonts and images go into the binary: the installed app must not need the source tree.
        .embed_resources(slint_build::EmbedResourcesKind::EmbedFiles);
    if let Err(e) = slint_build::compile_with_config("slint/apps.slint", config) {
        eprintln!("error: the .slint files do not compile: {e}");
        std::process::exit(1);
    }
}

/// Copies the deployment bundle named by `REFUGE_DEPLOYMENT_BUNDLE` (a signed client policy,
/// docs/transparency.md) into the build, where `refuge_ui::EMBEDDED_BUNDLE` includes it; an empty
/// file when it is not set. The app verifies it at start like any other bundle.
fn embed_deployment() {
    println!("cargo:rerun-if-env-changed=REFUGE_DEPLOYMENT_BUNDLE");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bytes = match std::env::var_os("REFUGE_DEPLOYMENT_BUNDLE") {
        Some(path) if !path.is_empty() => {
            println!("cargo:rerun-if-changed={}", path.to_string_lossy());
            match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!(
                        "error: REFUGE_DEPLOYMENT_BUNDLE={}: {e}",
                        path.to_string_lossy()
                    );
                    std::process::exit(1);
                }
            }
        }
        _ => Vec::new(),
    };
    if let Err(e) = std::fs::write(out.join("deployment.bundle"), bytes) {
        eprintln!("error: cannot write the deployment bundle into OUT_DIR: {e}");
        std::process::exit(1);
    }
}
