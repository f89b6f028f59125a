// Pins prometheus-operator, whose example/prometheus-operator-crd folder holds the real
// CustomResourceDefinitions (PrometheusRule, AlertmanagerConfig, Prometheus) the AlertRule
// tests install. Nothing is built from it.
module nova.infra.dev/tests/prometheus-operator-crds

go 1.24

require github.com/prometheus-operator/prometheus-operator v0.85.0
