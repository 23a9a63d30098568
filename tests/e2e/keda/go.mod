// A test client of prescale's KEDA external scaler, built from KEDA's own generated
// `externalscaler` package (tests/e2e/peers.sh builds it into the peers cache; the
// e2e test runs it). Nothing here is compiled into prescale.
module prescale.test/keda

go 1.26.0

require (
	github.com/kedacore/keda/v2 v2.21.0
	google.golang.org/grpc v1.84.0
)

require (
	golang.org/x/net v0.58.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
	golang.org/x/text v0.41.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260904194346-d0f1323225a4 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
