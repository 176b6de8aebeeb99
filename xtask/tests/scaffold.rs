//! `new-plugin` scaffolds every plugin kind the kernel declares, and no other.

/// The kinds with templates are the kernel's `KINDS`, in its order: a new kind in the kernel's
/// `kinds!` list fails here until it has its templates.
#[test]
fn every_kernel_kind_has_templates() {
    let scaffolded: Vec<&str> = xtask::scaffold::kinds().collect();
    assert_eq!(scaffolded, sdeflow_kernel::KINDS);
}
