// keda-client calls prescale's KEDA external scaler through KEDA's own generated
// client (github.com/kedacore/keda/v2/pkg/scalers/externalscaler) over TLS, as
// KEDA's `external` trigger does, and prints each answer as one JSON line:
//
//	keda-client -addr HOST:PORT -ca CA.pem [-cert C.pem -key K.pem] [-server-name NAME] \
//	    spec|metrics|active|stream [key=value ...]
//
// The key=value arguments are the trigger's metadata (scalerMetadata). `stream`
// prints every StreamIsActive message until -messages have arrived or -timeout
// passes, then hangs up. A gRPC error prints {"code": ..., "message": ...} and
// exits 0: the caller judges it. Anything else (bad flags, bad files) exits 2.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	pb "github.com/kedacore/keda/v2/pkg/scalers/externalscaler"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "keda-client: "+format+"\n", args...)
	os.Exit(2)
}

func emit(v any) {
	line, err := json.Marshal(v)
	if err != nil {
		fail("encode: %v", err)
	}
	fmt.Println(string(line))
}

func emitError(err error) {
	s := status.Convert(err)
	emit(map[string]string{"code": s.Code().String(), "message": s.Message()})
}

func main() {
	addr := flag.String("addr", "", "host:port of the scaler")
	ca := flag.String("ca", "", "PEM file of the CA that signs the scaler's certificate (caCert)")
	cert := flag.String("cert", "", "PEM client certificate (tlsClientCert)")
	key := flag.String("key", "", "PEM client key (tlsClientKey)")
	serverName := flag.String("server-name", "", "name to verify the scaler's certificate against")
	name := flag.String("name", "e2e", "ScaledObject name")
	namespace := flag.String("namespace", "e2e", "ScaledObject namespace")
	messages := flag.Int("messages", 1, "stream: messages to wait for")
	timeout := flag.Duration("timeout", 30*time.Second, "deadline of the whole call")
	flag.Parse()
	if flag.NArg() < 1 {
		fail("usage: keda-client [flags] spec|metrics|active|stream [key=value ...]")
	}

	pool := x509.NewCertPool()
	if pem, err := os.ReadFile(*ca); err != nil || !pool.AppendCertsFromPEM(pem) {
		fail("-ca %q: not a readable PEM certificate (%v)", *ca, err)
	}
	config := &tls.Config{RootCAs: pool, ServerName: *serverName, MinVersion: tls.VersionTLS12}
	if *cert != "" {
		pair, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			fail("-cert/-key: %v", err)
		}
		config.Certificates = []tls.Certificate{pair}
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(credentials.NewTLS(config)))
	if err != nil {
		fail("dial %s: %v", *addr, err)
	}
	defer conn.Close()
	client := pb.NewExternalScalerClient(conn)

	ref := &pb.ScaledObjectRef{Name: *name, Namespace: *namespace, ScalerMetadata: map[string]string{}}
	for _, kv := range flag.Args()[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			fail("metadata %q: want key=value", kv)
		}
		ref.ScalerMetadata[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	switch op := flag.Arg(0); op {
	case "spec":
		r, err := client.GetMetricSpec(ctx, ref)
		if err != nil {
			emitError(err)
			return
		}
		emit(r.GetMetricSpecs())
	case "metrics":
		specs, err := client.GetMetricSpec(ctx, ref)
		if err != nil || len(specs.GetMetricSpecs()) == 0 {
			emitError(err)
			return
		}
		// As KEDA does: ask for the metric the spec named.
		r, err := client.GetMetrics(ctx, &pb.GetMetricsRequest{ScaledObjectRef: ref, MetricName: specs.GetMetricSpecs()[0].GetMetricName()})
		if err != nil {
			emitError(err)
			return
		}
		emit(r.GetMetricValues())
	case "active":
		r, err := client.IsActive(ctx, ref)
		if err != nil {
			emitError(err)
			return
		}
		emit(map[string]bool{"result": r.GetResult()})
	case "stream":
		s, err := client.StreamIsActive(ctx, ref)
		if err != nil {
			emitError(err)
			return
		}
		for i := 0; i < *messages; i++ {
			r, err := s.Recv()
			if err != nil {
				emitError(err)
				return
			}
			emit(map[string]any{"result": r.GetResult(), "at_ms": time.Now().UnixMilli()})
		}
	default:
		fail("unknown operation %q", op)
	}
}
