package client_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"strings"

	"devreg/client"
	"devreg/server"
)

// Example registers a lot of devices from a factory tool: define a device type, register a bulk
// upload file, and resend it safely.
func Example() {
	serverURL, apiKey, stop := startServer() // your devreg server and an API key with the register scope
	defer stop()

	ctx := context.Background()
	c := client.New(serverURL, apiKey)

	name := "Thermostat T1"
	dt, err := c.CreateDeviceType(ctx, client.DeviceTypeInput{Name: &name})
	if err != nil {
		log.Fatal(err)
	}
	lot := "device1, secretfordevice1, device2, secretfordevice2,\ndevice3, secretfordevice3\n"
	res, err := c.RegisterCSV(ctx, dt.ID, strings.NewReader(lot), client.RegisterOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("created:", res.Created)

	// Resending a lot is safe: what is registered already counts as unchanged.
	res, err = c.RegisterCSV(ctx, dt.ID, strings.NewReader(lot), client.RegisterOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("unchanged:", res.Unchanged)

	// A bad lot is refused whole, with every problem.
	_, err = c.RegisterCSV(ctx, dt.ID, strings.NewReader("device4, short\n"), client.RegisterOptions{})
	if e, ok := err.(*client.Error); ok {
		for _, p := range e.Problems {
			fmt.Printf("entry %d, line %d: %s\n", p.Index, p.Line, p.Message)
		}
	}
	// Output:
	// created: 3
	// unchanged: 3
	// entry 0, line 1: secret is 5 characters long; this device type needs at least 8
}

// startServer runs a devreg server on a temporary database for the example.
func startServer() (url, apiKey string, stop func()) {
	dir, err := os.MkdirTemp("", "devreg-example")
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	srv, err := server.Open(ctx, server.Config{Addr: "127.0.0.1:0", DataDir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve()
	_, key, err := srv.Service.NewAccount(ctx, "Example", "owner@example.test", "example-password")
	if err != nil {
		log.Fatal(err)
	}
	return srv.URL(), key, func() { srv.Shutdown(ctx); os.RemoveAll(dir) }
}
