package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"devreg"
)

func (m *Main) batchesList(ctx context.Context, args []string) error {
	fs := m.flagSet("batches list", "batches list [--device-type ID] [--json]\n\n"+
		"Lists the batches (manufacturing lots), newest first, all pages.\n\n"+
		"Example:\n  devreg batches list --device-type dt_abc123")
	server, apiKey := m.clientFlags(fs)
	typeID := fs.String("device-type", "", "only batches of this device type `ID`")
	asJSON := fs.Bool("json", false, "print JSON lines, one batch each, instead of a table")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := m.newClient(*server, *apiKey)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(m.Stdout)
	defer bw.Flush()
	enc := json.NewEncoder(bw)
	tw := tabwriter.NewWriter(bw, 2, 4, 2, ' ', 0)
	if !*asJSON {
		fmt.Fprintln(tw, "ID\tNAME\tTYPE\tCREATED\tBY\tDEVICES\tCONNECTED\tSTATUS")
	}
	for cursor := ""; ; {
		batches, next, err := c.ListBatches(ctx, *typeID, cursor)
		if err != nil {
			return explain(*server, err)
		}
		for _, b := range batches {
			if *asJSON {
				if err := enc.Encode(b); err != nil {
					return err
				}
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", b.ID, b.Name, b.DeviceTypeID, b.CreatedAt.Format(time.RFC3339), b.CreatedBy,
				b.DeviceCount, b.ConnectedCount, b.Status)
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if !*asJSON {
		return tw.Flush()
	}
	return nil
}

func (m *Main) batchesDisable(ctx context.Context, args []string) error {
	return m.setBatchStatus(ctx, "disable", devreg.StatusDisabled, args)
}

func (m *Main) batchesEnable(ctx context.Context, args []string) error {
	return m.setBatchStatus(ctx, "enable", devreg.StatusEnabled, args)
}

// setBatchStatus is batches disable and batches enable.
func (m *Main) setBatchStatus(ctx context.Context, verb string, status devreg.BatchStatus, args []string) error {
	what := "Disables a batch: none of its devices can authenticate while it is, whatever their own status."
	if status == devreg.StatusEnabled {
		what = "Enables a disabled batch again: its devices authenticate as their own status says."
	}
	fs := m.flagSet("batches "+verb, "batches "+verb+" ID\n\n"+what+" Prints the batch as JSON.\n"+
		"Needs an admin API key.\n\nExample:\n  devreg batches "+verb+" bat_abc123")
	server, apiKey := m.clientFlags(fs)
	if err := parseBatchID(fs, args); err != nil {
		return err
	}
	c, err := m.newClient(*server, *apiKey)
	if err != nil {
		return err
	}
	b, err := c.SetBatchStatus(ctx, fs.Arg(0), status)
	if err != nil {
		return explain(*server, err)
	}
	return m.printJSON(b)
}

func (m *Main) batchesDelete(ctx context.Context, args []string) error {
	fs := m.flagSet("batches delete", "batches delete [--yes] ID\n\n"+
		"Deletes a batch and every device in it, in one transaction: the undo of a mistaken lot. It\n"+
		"names the batch and its device count and asks for confirmation first, unless --yes; then\n"+
		"prints how many devices were deleted. Needs an admin API key.\n\n"+
		"Example:\n  devreg batches delete bat_abc123")
	server, apiKey := m.clientFlags(fs)
	yes := fs.Bool("yes", false, "delete without asking")
	if err := parseBatchID(fs, args); err != nil {
		return err
	}
	c, err := m.newClient(*server, *apiKey)
	if err != nil {
		return err
	}
	id := fs.Arg(0)
	if !*yes {
		b, err := c.Batch(ctx, id)
		if err != nil {
			return explain(*server, err)
		}
		if !m.confirm(fmt.Sprintf("Delete batch %s with its %d devices?", batchLabel(b), b.DeviceCount)) {
			return fmt.Errorf("nothing deleted: not confirmed (answer y, or give --yes)")
		}
	}
	n, err := c.DeleteBatch(ctx, id)
	if err != nil {
		return explain(*server, err)
	}
	fmt.Fprintf(m.Stdout, "deleted batch %s and its %d devices\n", id, n)
	return nil
}

// batchLabel names a batch as a person knows it: its name, if it has one, and its ID.
func batchLabel(b devreg.Batch) string {
	if b.Name != "" {
		return fmt.Sprintf("%q (%s)", b.Name, b.ID)
	}
	return b.ID
}

// confirm asks question on stderr and reads one line from stdin: y or yes agrees.
func (m *Main) confirm(question string) bool {
	fmt.Fprintf(m.Stderr, "%s [y/N] ", question)
	line, _ := bufio.NewReader(m.Stdin).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true
	}
	return false
}

// parseBatchID parses the flags of a command that takes one batch ID, which may come before or
// after them.
func parseBatchID(fs *flag.FlagSet, args []string) error {
	var id []string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		id, args = args[:1], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if len(id)+fs.NArg() != 1 {
		return usageError{"give exactly one batch ID (see devreg batches list)"}
	}
	if id != nil {
		return fs.Parse(append(args, id...)) // fs.Arg(0) is then the ID
	}
	return nil
}
