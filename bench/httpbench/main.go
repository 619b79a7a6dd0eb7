// httpbench drives weir's HTTP input the way teleport-event-handler does: net/http over mTLS
// with ForceAttemptHTTP2, a pool of keep-alive connections, one JSON event per POST, only 200
// counts. It paces requests at a fixed total rate and reports requests/s, latency p50/p99/max
// and how many distinct connections were used (no churn means it equals -conns).
//
//	go build (GO111MODULE=off, Debian's Go) && ./httpbench -url https://localhost:8888/test.log \
//	    -ca ca.crt -cert client.crt -key client.key -rate 2000 -conns 10 -seconds 30
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const event = `{"addr.remote":"192.0.2.10:52906", "cluster_name":"teleport.example.com", "code":"T1000I", "ei":0, "event":"user.login", "method":"local", "success":true, "time":"2024-05-09T21:00:40.632Z", "uid":"c325a91c-62b5-473d-b906-9926d6ce4530", "user":"alice", "user_agent":"Mozilla/5.0 (X11; Linux x86_64)"}`

func main() {
	url := flag.String("url", "https://localhost:8888/test.log", "endpoint")
	ca := flag.String("ca", "ca.crt", "CA certificate")
	cert := flag.String("cert", "client.crt", "client certificate")
	key := flag.String("key", "client.key", "client key")
	rate := flag.Int("rate", 2000, "requests per second, all connections together")
	conns := flag.Int("conns", 10, "keep-alive connections (and concurrent senders)")
	seconds := flag.Int("seconds", 30, "duration")
	flag.Parse()

	pool := x509.NewCertPool()
	pem, err := os.ReadFile(*ca)
	if err != nil || !pool.AppendCertsFromPEM(pem) {
		fmt.Fprintln(os.Stderr, "cannot read CA", *ca, err)
		os.Exit(2)
	}
	pair, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		fmt.Fprintln(os.Stderr, "client cert:", err)
		os.Exit(2)
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: *conns,
		MaxConnsPerHost:     *conns,
		IdleConnTimeout:     30 * time.Second,
	}
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}

	var mu sync.Mutex
	seen := map[string]bool{}
	var lat []time.Duration
	var ok, failed, sent int64
	var proto atomic.Value
	interval := time.Duration(float64(time.Second) * float64(*conns) / float64(*rate))
	deadline := time.Now().Add(time.Duration(*seconds) * time.Second)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < *conns; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			next := time.Now().Add(time.Duration(w) * interval / time.Duration(*conns))
			var mine []time.Duration
			for time.Now().Before(deadline) {
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				}
				next = next.Add(interval)
				trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
					mu.Lock()
					seen[fmt.Sprintf("%p", info.Conn)] = true
					mu.Unlock()
				}}
				// every event its own uid, as Teleport's are (the dedupe filter keys on it)
				n := atomic.AddInt64(&sent, 1)
				body := strings.Replace(event, "c325a91c-62b5-473d-b906-9926d6ce4530", fmt.Sprintf("c325a91c-62b5-473d-b906-%012d", n), 1)
				req, _ := http.NewRequest("POST", *url, bytes.NewBufferString(body))
				req.Header.Add("Content-Type", "application/json")
				req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					atomic.AddInt64(&failed, 1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mine = append(mine, time.Since(t0))
				proto.Store(resp.Proto)
				if resp.StatusCode == 200 {
					atomic.AddInt64(&ok, 1)
				} else {
					atomic.AddInt64(&failed, 1)
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[int(float64(len(lat)-1)*p)].Microseconds()) / 1000
	}
	fmt.Printf("requests ok=%d failed=%d seconds=%.1f req/s=%.0f proto=%v connections=%d\n",
		ok, failed, elapsed, float64(ok)/elapsed, proto.Load(), len(seen))
	fmt.Printf("latency p50=%.2f ms p99=%.2f ms max=%.2f ms\n", pct(0.5), pct(0.99), pct(1))
}
