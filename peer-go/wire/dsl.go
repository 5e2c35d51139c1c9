package wire

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// The customer username DSL (PROTOCOL.md section 3), the same grammar as shared/dsl.ts:
//
//	psx_<account>-<pool>-<country>[-<token>-<value>]...
//
// The peer itself never parses usernames; fleets use FormatUsername to build the self-test line.

var (
	Pools     = []string{"mbl", "peer", "any"}
	Rotations = []string{"sticky", "hard", "auto5", "auto10", "auto20", "auto60", "ondemand"}
	IPTypes   = []string{"mobile", "residential", "datacenter"}
	Tokens    = []string{"sid", "rot", "ttl", "carrier", "city", "iptype", "pin"}
)

const (
	TTLMin = 60
	TTLMax = 86400
)

var (
	accountRE = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)
	countryRE = regexp.MustCompile(`^[a-z]{2}$`)
	sidRE     = regexp.MustCompile(`^[a-z0-9_]{8,64}$`)
	nameRE    = regexp.MustCompile(`^[a-z0-9_.]{1,64}$`)
	ttlRE     = regexp.MustCompile(`^\d{1,6}$`)
	// Device ids are prefixed ids (agent_<hex>): no hyphens, so they fit the DSL as they are.
	deviceRE = regexp.MustCompile(`^[a-z0-9_]{4,64}$`)
)

// RouteRequest is a parsed username; JSON names match shared/dsl.ts's RouteRequest.
type RouteRequest struct {
	Account string `json:"account"`
	Pool    string `json:"pool"`
	Country string `json:"country"`
	Sid     string `json:"sid,omitempty"`
	Rot     string `json:"rot,omitempty"`
	TTL     int    `json:"ttl,omitempty"`
	Carrier string `json:"carrier,omitempty"`
	City    string `json:"city,omitempty"`
	IPType  string `json:"iptype,omitempty"`
	// PinDevice is `pin-device-<deviceId>`: exactly this device, never another.
	PinDevice string `json:"pinDevice,omitempty"`
}

// UsernameError names the token that failed and lists what is valid there.
type UsernameError struct {
	Token string
	Msg   string
	Valid []string
}

func (e *UsernameError) Error() string { return e.Msg + "; valid: " + strings.Join(e.Valid, ", ") }

func validValues(token string) []string {
	switch token {
	case "sid":
		return []string{"[a-z0-9_]{8,64}"}
	case "rot":
		return Rotations
	case "ttl":
		return []string{strconv.Itoa(TTLMin) + "-" + strconv.Itoa(TTLMax)}
	case "iptype":
		return IPTypes
	case "pin":
		return []string{"device-<deviceId>"}
	default:
		return []string{"[a-z0-9_.]{1,64}"}
	}
}

// ParseUsername parses a proxy username strictly: any defect is a *UsernameError.
func ParseUsername(raw string) (RouteRequest, error) {
	parts := strings.Split(strings.ToLower(raw), "-")
	head := parts[0]
	if !strings.HasPrefix(head, "psx_") {
		return RouteRequest{}, &UsernameError{"psx_", "username must start with psx_<account>", []string{"psx_<account>"}}
	}
	account := head[4:]
	if !accountRE.MatchString(account) {
		return RouteRequest{}, &UsernameError{"account", `account "` + account + `" is not 1-64 of [a-z0-9_]`, []string{"[a-z0-9_]{1,64}"}}
	}
	at := func(i int) string {
		if i < len(parts) {
			return parts[i]
		}
		return ""
	}
	pool, country := at(1), at(2)
	if !slices.Contains(Pools, pool) {
		return RouteRequest{}, &UsernameError{"pool", `pool "` + pool + `" is not valid`, Pools}
	}
	if country != "any" && !countryRE.MatchString(country) {
		return RouteRequest{}, &UsernameError{"country", `country "` + country + `" is not ISO-2 or any`, []string{"<iso2>", "any"}}
	}
	out := RouteRequest{Account: account, Pool: pool, Country: country}
	seen := map[string]bool{}
	order := []string{} // tokens as they appear: the first extra one is named
	rest := []string{}
	if len(parts) > 3 {
		rest = parts[3:]
	}
	hasTTL := false
	for i := 0; i < len(rest); i += 2 {
		token := rest[i]
		value := ""
		if i+1 < len(rest) {
			value = rest[i+1]
		}
		if !slices.Contains(Tokens, token) {
			return RouteRequest{}, &UsernameError{token, `unknown token "` + token + `"`, Tokens}
		}
		if seen[token] {
			return RouteRequest{}, &UsernameError{token, `token "` + token + `" given twice`, Tokens}
		}
		seen[token] = true
		order = append(order, token)
		if value == "" {
			return RouteRequest{}, &UsernameError{token, `token "` + token + `" has no value`, validValues(token)}
		}
		if token == "pin" {
			// pin-device-<deviceId>: the only three-part token.
			if value != "device" {
				return RouteRequest{}, &UsernameError{"pin", `pin "` + value + `" is not valid`, validValues("pin")}
			}
			deviceID := ""
			if i+2 < len(rest) {
				deviceID = rest[i+2]
			}
			if !deviceRE.MatchString(deviceID) {
				return RouteRequest{}, &UsernameError{"pin", `pin-device "` + deviceID + `" is not a device id`, validValues("pin")}
			}
			out.PinDevice = deviceID
			i++
			continue
		}
		bad := func(what string) error {
			return &UsernameError{token, token + ` "` + value + `" ` + what, validValues(token)}
		}
		switch token {
		case "sid":
			if !sidRE.MatchString(value) {
				return RouteRequest{}, bad("is not 8-64 of [a-z0-9_]")
			}
			out.Sid = value
		case "rot":
			if !slices.Contains(Rotations, value) {
				return RouteRequest{}, bad("is not a rotation mode")
			}
			out.Rot = value
		case "ttl":
			if !ttlRE.MatchString(value) {
				return RouteRequest{}, bad("is not a whole number of seconds")
			}
			n, _ := strconv.Atoi(value)
			if n < TTLMin || n > TTLMax {
				return RouteRequest{}, bad("is out of range")
			}
			out.TTL, hasTTL = n, true
		case "iptype":
			if !slices.Contains(IPTypes, value) {
				return RouteRequest{}, bad("is not an IP type")
			}
			out.IPType = value
		case "carrier", "city":
			if !nameRE.MatchString(value) {
				return RouteRequest{}, bad("is not 1-64 of [a-z0-9_.]")
			}
			if token == "carrier" {
				out.Carrier = value
			} else {
				out.City = value
			}
		}
	}
	if out.PinDevice != "" {
		// One device is named: session and preference tokens could not be honoured, so they are refused.
		for _, t := range order {
			if t != "pin" {
				return RouteRequest{}, &UsernameError{t, `token "` + t + `" cannot be combined with pin-device`, []string{"pin-device-<deviceId>"}}
			}
		}
	}
	if out.Sid == "" && (out.Rot != "" || hasTTL) {
		token := "ttl"
		if out.Rot != "" {
			token = "rot"
		}
		return RouteRequest{}, &UsernameError{token, "rot and ttl need a sid", []string{"sid"}}
	}
	if out.Sid != "" && out.Rot == "" {
		out.Rot = "auto10"
	}
	return out, nil
}

// FormatUsername is the canonical username for r; ParseUsername(FormatUsername(r)) equals r.
func FormatUsername(r RouteRequest) string {
	parts := []string{"psx_" + r.Account, r.Pool, r.Country}
	add := func(token, value string) {
		if value != "" {
			parts = append(parts, token, value)
		}
	}
	add("sid", r.Sid)
	add("rot", r.Rot)
	if r.TTL != 0 {
		add("ttl", strconv.Itoa(r.TTL))
	}
	add("carrier", r.Carrier)
	add("city", r.City)
	add("iptype", r.IPType)
	if r.PinDevice != "" {
		parts = append(parts, "pin", "device", r.PinDevice)
	}
	return strings.Join(parts, "-")
}
