module nova.infra.dev/tests/images/app

go 1.24
