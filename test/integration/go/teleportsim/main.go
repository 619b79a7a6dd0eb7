// teleportsim posts audit and session events the way teleport-event-handler does
// (docs/http-input.md sections 1 and 6): Go's net/http over mutual TLS with an
// HTTP/2-capable transport (ALPN offers h2 and http/1.1), at most 10 idle connections
// kept for 30 s, 10 goroutines each posting its share of the events one at a time with
// Content-Type: application/json, and only status 200 counted as delivered.
//
// Each line of the -audit file is one event body, posted as it is to <url>. Each line
// of the -session file is one session event, posted to <session-url>.<sid>.log in file
// order per session (the events of one session go to one goroutine).
// With -gaps "1s,3s" the events are split into rounds with those idle pauses between
// them, so connections are reused after idle gaps (or re-dialled after the server
// closed them).
//
// It prints one JSON report on stdout: successes, failures, statuses, the protocols
// (resp.Proto) and ALPN results seen, TLS versions, and how many distinct connections
// carried the requests.
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

type job struct {
	url  string
	body []byte
}

type report struct {
	Successes   int            `json:"successes"`
	Failures    int            `json:"failures"`
	Statuses    map[string]int `json:"statuses"`
	Protos      map[string]int `json:"protos"`
	ALPN        map[string]int `json:"alpn"`
	TLSVersions map[string]int `json:"tls_versions"`
	Connections int            `json:"connections"`
	Reused      int            `json:"reused"`
	Errors      []string       `json:"errors"`
}

type sim struct {
	client *http.Client
	mu     sync.Mutex
	rep    report
	conns  map[string]bool
}

func readLines(path string) ([][]byte, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 64<<20)
	var lines [][]byte
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		lines = append(lines, append([]byte(nil), sc.Bytes()...))
	}
	return lines, sc.Err()
}

func newClient(ca, cert, key string) (*http.Client, error) {
	conf := &tls.Config{}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no certificates in %s", ca)
		}
		conf.RootCAs = pool
	}
	if cert != "" || key != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, err
		}
		conf.Certificates = []tls.Certificate{pair}
	}
	tr := &http.Transport{
		TLSClientConfig:     conf,
		ForceAttemptHTTP2:   true, // offers ALPN h2, http/1.1 as the handler's transport does
		MaxIdleConnsPerHost: 10,
		IdleConnTimeout:     30 * time.Second,
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, nil
}

func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS12:
		return "TLS1.2"
	case tls.VersionTLS13:
		return "TLS1.3"
	}
	return fmt.Sprintf("0x%04x", v)
}

func (s *sim) post(j job) {
	req, err := http.NewRequest("POST", j.url, bytes.NewReader(j.body))
	if err != nil {
		s.fail(err.Error())
		return
	}
	req.Header.Add("Content-Type", "application/json")
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		s.mu.Lock()
		s.conns[fmt.Sprintf("%p", info.Conn)] = true
		if info.Reused {
			s.rep.Reused++
		}
		s.mu.Unlock()
	}}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	resp, err := s.client.Do(req)
	if err != nil {
		s.fail(err.Error())
		return
	}
	resp.Body.Close() // the handler never reads the body
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rep.Statuses[strconv.Itoa(resp.StatusCode)]++
	s.rep.Protos[resp.Proto]++
	if resp.TLS != nil {
		alpn := resp.TLS.NegotiatedProtocol
		if alpn == "" {
			alpn = "(none)"
		}
		s.rep.ALPN[alpn]++
		s.rep.TLSVersions[tlsVersion(resp.TLS.Version)]++
	}
	if resp.StatusCode == 200 {
		s.rep.Successes++
	} else {
		s.rep.Failures++
	}
}

func (s *sim) fail(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rep.Failures++
	if len(s.rep.Errors) < 20 {
		s.rep.Errors = append(s.rep.Errors, msg)
	}
}

func parseGaps(spec string) ([]time.Duration, error) {
	var gaps []time.Duration
	for _, g := range strings.Split(spec, ",") {
		if g = strings.TrimSpace(g); g == "" {
			continue
		}
		d, err := time.ParseDuration(g)
		if err != nil {
			return nil, err
		}
		gaps = append(gaps, d)
	}
	return gaps, nil
}

// plan gives each worker its jobs: audit events round-robin, each session's events in
// order on one worker.
func plan(url, sessionURL string, audit, session [][]byte, workers int) ([][]job, error) {
	w := make([][]job, workers)
	for i, b := range audit {
		w[i%workers] = append(w[i%workers], job{url, b})
	}
	owner := map[string]int{}
	for _, b := range session {
		var ev struct {
			Sid string `json:"sid"`
		}
		if err := json.Unmarshal(b, &ev); err != nil || ev.Sid == "" {
			return nil, fmt.Errorf("session event without a sid: %.80s", b)
		}
		k, ok := owner[ev.Sid]
		if !ok {
			k = (len(audit) + len(owner)) % workers
			owner[ev.Sid] = k
		}
		w[k] = append(w[k], job{sessionURL + "." + ev.Sid + ".log", b})
	}
	return w, nil
}

func main() {
	url := flag.String("url", "https://localhost:8888/test.log", "audit events URL")
	sessionURL := flag.String("session-url", "https://localhost:8888/session", "session URL base")
	auditFile := flag.String("audit", "", "file of audit events, one JSON object per line")
	sessionFile := flag.String("session", "", "file of session events, one JSON object per line")
	ca := flag.String("ca", "", "CA certificate (PEM)")
	cert := flag.String("cert", "", "client certificate (PEM)")
	key := flag.String("key", "", "client key (PEM, unencrypted)")
	workers := flag.Int("workers", 10, "goroutines posting at once")
	gapSpec := flag.String("gaps", "", "idle pauses between rounds, e.g. 1s,3s")
	flag.Parse()

	audit, err := readLines(*auditFile)
	if err == nil {
		var session [][]byte
		session, err = readLines(*sessionFile)
		if err == nil {
			err = run(*url, *sessionURL, audit, session, *ca, *cert, *key, *workers, *gapSpec)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "teleportsim:", err)
		os.Exit(2)
	}
}

func run(url, sessionURL string, audit, session [][]byte, ca, cert, key string, workers int,
	gapSpec string) error {
	gaps, err := parseGaps(gapSpec)
	if err != nil {
		return err
	}
	client, err := newClient(ca, cert, key)
	if err != nil {
		return err
	}
	jobs, err := plan(url, sessionURL, audit, session, workers)
	if err != nil {
		return err
	}
	s := &sim{client: client, conns: map[string]bool{}}
	s.rep.Statuses = map[string]int{}
	s.rep.Protos = map[string]int{}
	s.rep.ALPN = map[string]int{}
	s.rep.TLSVersions = map[string]int{}
	rounds := len(gaps) + 1
	for r := 0; r < rounds; r++ {
		if r > 0 {
			time.Sleep(gaps[r-1])
		}
		var wg sync.WaitGroup
		for k := range jobs {
			// round r takes the r-th slice of each worker's jobs, keeping their order
			mine := jobs[k]
			lo, hi := len(mine)*r/rounds, len(mine)*(r+1)/rounds
			wg.Add(1)
			go func(js []job) {
				defer wg.Done()
				for _, j := range js {
					s.post(j)
				}
			}(mine[lo:hi])
		}
		wg.Wait()
	}
	s.rep.Connections = len(s.conns)
	out, _ := json.Marshal(s.rep)
	fmt.Println(string(out))
	return nil
}
