// fluentsend posts N events with fluent-logger-golang (Debian's
// golang-github-fluent-fluent-logger-golang-dev), the library Docker's fluentd log driver uses.
// Usage: fluentsend -port P -n N -tag T [-ack] [-subsecond]
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/fluent/fluent-logger-golang/fluent"
)

func main() {
	port := flag.Int("port", 24224, "forward port")
	n := flag.Int("n", 10, "events to send")
	tag := flag.String("tag", "go.test", "tag")
	ack := flag.Bool("ack", false, "RequestAck")
	sub := flag.Bool("subsecond", false, "SubSecondPrecision (EventTime)")
	flag.Parse()

	logger, err := fluent.New(fluent.Config{
		FluentHost:         "127.0.0.1",
		FluentPort:         *port,
		RequestAck:         *ack,
		SubSecondPrecision: *sub,
		Timeout:            5 * time.Second,
		WriteTimeout:       5 * time.Second,
		MaxRetry:           3,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "connect:", err)
		os.Exit(1)
	}
	defer logger.Close()
	base := time.Unix(1700000000, 123456789)
	for i := 0; i < *n; i++ {
		rec := map[string]interface{}{"seq": i, "msg": fmt.Sprintf("event %d", i), "container_id": "abc"}
		if err := logger.PostWithTime(*tag, base.Add(time.Duration(i)*time.Millisecond), rec); err != nil {
			fmt.Fprintln(os.Stderr, "post:", err)
			os.Exit(1)
		}
	}
}
