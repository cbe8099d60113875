//! Tests of the generated CRD.

use super::*;

/// The committed `crds/wscluster.yaml` is what the types generate; run
/// `cargo run -p wsgate-operator -- crd > crds/wscluster.yaml` after
/// changing them.
#[test]
fn committed_crd_matches_the_types() {
    let committed = include_str!("../wscluster.yaml");
    let generated = crd_yaml().unwrap();
    assert!(
        committed == generated,
        "crds/wscluster.yaml is stale: run `cargo run -p wsgate-operator -- crd > crds/wscluster.yaml` \
         and copy it to charts/wsgate/crds/"
    );
}

/// The chart ships the same CRD file.
#[test]
fn chart_ships_the_same_crd() {
    let committed = include_str!("../wscluster.yaml");
    let chart = include_str!("../../charts/wsgate/crds/wscluster.yaml");
    assert!(
        committed == chart,
        "charts/wsgate/crds/wscluster.yaml differs from crds/wscluster.yaml"
    );
}
