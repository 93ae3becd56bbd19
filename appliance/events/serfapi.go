package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"
)

// Admin API paths for `shoal event` and `shoal query`: the CLI POSTs the
// request types below as JSON to the agent's admin socket.
const (
	UserEventPath = "/v1/serf/event" // body UserEventRequest, answer {}
	QueryPath     = "/v1/serf/query" // body QueryRequest, answer QueryResponse
)

// MaxQueryTimeout bounds QueryRequest.Timeout: the admin client gives up
// after 10 s.
const MaxQueryTimeout = 9 * time.Second

// maxRequestBody bounds a decoded request; serf's own limits on user events
// and queries are far smaller and are enforced by serf.
const maxRequestBody = 64 << 10

// UserEventRequest asks the agent to broadcast a serf user event, as
// `serf event [-coalesce] NAME [PAYLOAD]` does.
type UserEventRequest struct {
	Name     string `json:"name"`
	Payload  []byte `json:"payload,omitempty"`
	Coalesce bool   `json:"coalesce"` // let serf coalesce events of the same name
}

// QueryRequest asks the agent to send a serf query and collect answers, as
// `serf query [-timeout] NAME [PAYLOAD]` does.
type QueryRequest struct {
	Name    string `json:"name"`
	Payload []byte `json:"payload,omitempty"`
	// TimeoutMS is how long to collect answers, in milliseconds; 0 = serf's
	// default. At most MaxQueryTimeout.
	TimeoutMS int64 `json:"timeout_ms,omitempty"`
}

// Timeout returns the collection time (0 = serf's default).
func (q QueryRequest) Timeout() time.Duration { return time.Duration(q.TimeoutMS) * time.Millisecond }

// QueryResponse lists the answers, sorted by node name.
type QueryResponse struct {
	Responses []QueryAnswer `json:"responses"`
}

// QueryAnswer is one node's answer to a query.
type QueryAnswer struct {
	From    string `json:"from"`
	Payload []byte `json:"payload"`
}

// NewQueryResponse builds the answer from responses keyed by node, as
// gossip's Query returns them.
func NewQueryResponse(byNode map[string][]byte) QueryResponse {
	out := QueryResponse{Responses: []QueryAnswer{}}
	for from, p := range byNode {
		out.Responses = append(out.Responses, QueryAnswer{From: from, Payload: p})
	}
	sort.Slice(out.Responses, func(i, j int) bool { return out.Responses[i].From < out.Responses[j].From })
	return out
}

// ErrBadRequest is wrapped by the Decode functions' validation errors.
var ErrBadRequest = errors.New("bad request")

// DecodeUserEventRequest reads and checks a UserEventRequest.
func DecodeUserEventRequest(r io.Reader) (UserEventRequest, error) {
	var req UserEventRequest
	if err := decodeStrict(r, &req); err != nil {
		return req, fmt.Errorf("decode user event request: %w", err)
	}
	if req.Name == "" {
		return req, fmt.Errorf("decode user event request: %w: empty event name", ErrBadRequest)
	}
	return req, nil
}

// DecodeQueryRequest reads and checks a QueryRequest.
func DecodeQueryRequest(r io.Reader) (QueryRequest, error) {
	var req QueryRequest
	if err := decodeStrict(r, &req); err != nil {
		return req, fmt.Errorf("decode query request: %w", err)
	}
	switch {
	case req.Name == "":
		return req, fmt.Errorf("decode query request: %w: empty query name", ErrBadRequest)
	case req.TimeoutMS < 0 || req.Timeout() > MaxQueryTimeout:
		return req, fmt.Errorf("decode query request: %w: timeout %s outside 0..%s", ErrBadRequest, req.Timeout(), MaxQueryTimeout)
	}
	return req, nil
}

func decodeStrict(r io.Reader, v any) error {
	dec := json.NewDecoder(io.LimitReader(r, maxRequestBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: trailing data", ErrBadRequest)
	}
	return nil
}
