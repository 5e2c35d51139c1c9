package peer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// Identity is the live identity of this device: the JWT the sockets present and what renews it.
type Identity struct {
	DeviceID     string
	JWT          string
	RefreshToken string
	Relay        string // the relay the API assigned (or the one we were redirected to)
	IPType       string
}

// RejectedError is an API answer retrying will not fix (bad key, bad field, account limit).
type RejectedError struct {
	Status int
	Msg    string
}

func (e *RejectedError) Error() string { return e.Msg }

// retryableError is the API's trouble or a pause it asked for (408/429/5xx, network).
type retryableError struct {
	msg        string
	retryAfter time.Duration
}

func (e *retryableError) Error() string { return e.msg }

func isRejected(err error) bool {
	var r *RejectedError
	return errors.As(err, &r)
}

// retryAfter is the wait an API answer asked for (Retry-After), 0 if none.
func retryAfter(err error) time.Duration {
	var r *retryableError
	if errors.As(err, &r) {
		return r.retryAfter
	}
	return 0
}

// Identities registers, refreshes and persists; Renew is single-flight across all sockets.
type Identities struct {
	cfg    *Config
	client *http.Client
	log    func(string)

	mu       sync.Mutex
	current  *Identity
	inflight chan struct{}
	lastErr  error
	renewals int
}

// NewIdentities uses client (nil = a default with 15 s timeout).
func NewIdentities(cfg *Config, client *http.Client, log func(string)) *Identities {
	if client == nil {
		client = &http.Client{Timeout: 15 * time.Second}
	}
	return &Identities{cfg: cfg, client: client, log: log}
}

// Current is the identity the sockets use now (nil before Acquire).
func (m *Identities) Current() *Identity {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.current
}

// Renewals counts refresh/register calls Renew made (one per expiry, however many sockets saw it).
func (m *Identities) Renewals() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.renewals
}

func (m *Identities) postJSON(ctx context.Context, path string, body any) (map[string]any, error) {
	data, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.cfg.APIURL+path, bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	req.Header.Set("content-type", "application/json")
	req.Header.Set("accept", "application/json")
	res, err := m.client.Do(req)
	if err != nil {
		return nil, &retryableError{msg: err.Error()}
	}
	defer res.Body.Close()
	text, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	var out map[string]any
	_ = json.Unmarshal(text, &out)
	if res.StatusCode < 200 || res.StatusCode > 299 {
		what := fmt.Sprintf("HTTP %d", res.StatusCode)
		if e, ok := out["error"].(map[string]any); ok {
			if msg, ok := e["message"].(string); ok && msg != "" {
				code, _ := e["code"].(string)
				if code == "" {
					code = strconv.Itoa(res.StatusCode)
				}
				what = code + ": " + msg
			}
		}
		if res.StatusCode != 408 && res.StatusCode != 429 && res.StatusCode < 500 {
			return nil, &RejectedError{Status: res.StatusCode, Msg: what}
		}
		secs, _ := strconv.Atoi(res.Header.Get("retry-after"))
		return nil, &retryableError{msg: what, retryAfter: time.Duration(secs) * time.Second}
	}
	if out == nil {
		out = map[string]any{}
	}
	return out, nil
}

func str(m map[string]any, key string) string {
	s, _ := m[key].(string)
	return s
}

// refresh trades the refresh token; advice is the answer's `relay`, the relay the API would assign
// the device now ("" from an API that predates it).
func (m *Identities) refresh(ctx context.Context, s State) (id *Identity, advice string, err error) {
	body, err := m.postJSON(ctx, "/v1/peer/agents/"+url.PathEscape(s.DeviceID)+"/refresh", map[string]string{"refreshToken": s.RefreshToken})
	if err != nil {
		return nil, "", err
	}
	jwt := str(body, "jwt")
	if jwt == "" {
		jwt = str(body, "token")
	}
	if jwt == "" {
		return nil, "", errors.New("refresh answer without a token")
	}
	rt := str(body, "refreshToken")
	if rt == "" {
		rt = s.RefreshToken
	}
	return &Identity{DeviceID: s.DeviceID, JWT: jwt, RefreshToken: rt, Relay: s.Relay}, str(body, "relay"), nil
}

func (m *Identities) register(ctx context.Context) (*Identity, error) {
	req := map[string]any{
		"name":       m.cfg.Name,
		"apiKey":     m.cfg.APIKey,
		"type":       "custom",
		"sdkVersion": SDKVersion,
		"country":    m.cfg.Country,
	}
	if m.cfg.Wallet != "" {
		req["walletAddress"] = m.cfg.Wallet
	}
	body, err := m.postJSON(ctx, "/v1/peer/agents/register", req)
	if err != nil {
		return nil, err
	}
	id := &Identity{
		DeviceID:     str(body, "deviceId"),
		JWT:          str(body, "jwt"),
		RefreshToken: str(body, "refreshToken"),
		Relay:        str(body, "relay"),
		IPType:       str(body, "ipType"),
	}
	if id.JWT == "" {
		id.JWT = str(body, "token")
	}
	if id.DeviceID == "" || id.JWT == "" || id.RefreshToken == "" || id.Relay == "" {
		return nil, errors.New("registration answer is missing fields")
	}
	return id, nil
}

// obtain refreshes if it can and registers otherwise (same key + name => same device, so safe).
func (m *Identities) obtain(ctx context.Context, from *State) (*Identity, bool, error) {
	if from != nil {
		id, _, err := m.refresh(ctx, *from)
		if err == nil {
			return id, true, nil
		}
		// Only a refused refresh token means registering again: an API that could not answer
		// (network, 408, 429, 5xx) would not answer a registration either, and a fleet that
		// registered on every busy answer would double the calls of a storm.
		if !isRejected(err) {
			return nil, false, err
		}
		m.log(fmt.Sprintf("[IDENTITY] refresh failed (%s); registering again", err))
	}
	id, err := m.register(ctx)
	return id, false, err
}

func (m *Identities) save(id *Identity) error {
	return WriteState(m.cfg.StateFile, State{DeviceID: id.DeviceID, RefreshToken: id.RefreshToken, Relay: id.Relay})
}

// Acquire is start-up: refresh from the saved state, else register; saves the state file.
func (m *Identities) Acquire(ctx context.Context) (id *Identity, resumed bool, err error) {
	id, resumed, err = m.obtain(ctx, ReadState(m.cfg.StateFile))
	if err != nil {
		return nil, false, err
	}
	if err := m.save(id); err != nil {
		return nil, false, &RejectedError{Msg: err.Error()}
	}
	m.mu.Lock()
	m.current = id
	m.mu.Unlock()
	return id, resumed, nil
}

// Renew runs after a 4001/4002. Every socket that saw staleJWT rejected shares one API call; a
// socket whose token was already replaced gets the new one for free. renewed reports whether
// this call made the API request.
func (m *Identities) Renew(ctx context.Context, staleJWT string) (renewed bool, err error) {
	m.mu.Lock()
	if m.current != nil && m.current.JWT != staleJWT {
		m.mu.Unlock()
		return false, nil
	}
	if ch := m.inflight; ch != nil {
		m.mu.Unlock()
		<-ch
		m.mu.Lock()
		defer m.mu.Unlock()
		return false, m.lastErr
	}
	ch := make(chan struct{})
	m.inflight = ch
	m.renewals++
	base := m.current
	m.mu.Unlock()

	var from *State
	if base != nil {
		from = &State{DeviceID: base.DeviceID, RefreshToken: base.RefreshToken, Relay: base.Relay}
	}
	id, _, err := m.obtain(ctx, from)
	if err == nil {
		// A redirect we followed stays our relay; a refresh does not move us.
		if base != nil {
			id.Relay = base.Relay
		}
		err = m.save(id)
	}
	m.mu.Lock()
	if err == nil {
		m.current = id
	}
	m.lastErr = err
	m.inflight = nil
	m.mu.Unlock()
	close(ch)
	return true, err
}

// SetRelay records a followed redirect so a restart goes straight to the new relay.
func (m *Identities) SetRelay(relay string) {
	m.mu.Lock()
	if m.current == nil {
		m.mu.Unlock()
		return
	}
	next := *m.current
	next.Relay = relay
	m.current = &next
	m.mu.Unlock()
	if err := m.save(&next); err != nil {
		m.log("[STATE] " + err.Error())
	}
}

// RelayAdvice is the failover check: one refresh (after any renewal in flight, which it waits
// for: the agents refresh rotates the refresh token, so two at once would spend it twice) that
// also renews the JWT and saves the rotated refresh token. advice is the relay the API assigns
// now, "" from an API that does not say. Like Renew it registers again (same name, same device)
// when the refresh token is refused, and then register's `relay` is the advice: a device whose relay is dead
// gets no 4001/4002 that would make Renew do it. The relay we are on is not changed here.
func (m *Identities) RelayAdvice(ctx context.Context) (advice string, err error) {
	m.mu.Lock()
	for m.inflight != nil {
		ch := m.inflight
		m.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return "", ctx.Err()
		}
		m.mu.Lock()
	}
	if m.current == nil {
		m.mu.Unlock()
		return "", errors.New("no identity yet")
	}
	ch := make(chan struct{})
	m.inflight = ch
	base := m.current
	m.mu.Unlock()

	id, advice, err := m.refresh(ctx, State{DeviceID: base.DeviceID, RefreshToken: base.RefreshToken, Relay: base.Relay})
	if err != nil && ctx.Err() == nil && isRejected(err) {
		m.log(fmt.Sprintf("[IDENTITY] refresh failed (%s); registering again", err))
		if id, err = m.register(ctx); err == nil {
			advice = id.Relay
		}
	}
	m.mu.Lock()
	if err == nil {
		// The presented refresh token is spent now: adopt the answer even if saving it fails. The
		// relay we are on stays ours, even one a redirect moved us to while the call was out.
		id.Relay = m.current.Relay
		m.current = id
	}
	m.lastErr = err
	m.inflight = nil
	m.mu.Unlock()
	close(ch)
	if err == nil {
		if serr := m.save(id); serr != nil {
			m.log("[STATE] " + serr.Error())
		}
	}
	return advice, err
}
