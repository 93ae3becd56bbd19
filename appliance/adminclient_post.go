package appliance

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// AdminError is a non-2xx answer of the admin API: the HTTP status and the
// agent's message (e.g. 403 on a restricted node, 409 for an unchanged
// config, 422 for an invalid one).
type AdminError struct {
	Code int    // HTTP status code
	Msg  string // the agent's "error" text, else the HTTP status text
}

func (e *AdminError) Error() string { return "agent: " + e.Msg }

// AdminStatus returns the HTTP status of an admin API error (0 if err is
// not one).
func AdminStatus(err error) int {
	var ae *AdminError
	if errors.As(err, &ae) {
		return ae.Code
	}
	return 0
}

// Post sends body (contentType, e.g. "application/toml"; nil body allowed)
// to path (e.g. "/v1/config") and decodes the JSON answer into v (nil:
// ignore it). A non-2xx answer is an *AdminError.
func (c *AdminClient) Post(path, contentType string, body []byte, v any) error {
	resp, err := c.hc.Post("http://shoal"+path, contentType, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("query agent at %s (is `shoal agent` running?): %w", c.path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read agent answer: %w", err)
	}
	if resp.StatusCode < http.StatusOK || resp.StatusCode >= http.StatusMultipleChoices {
		var e struct{ Error string }
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return &AdminError{Code: resp.StatusCode, Msg: e.Error}
		}
		return &AdminError{Code: resp.StatusCode, Msg: resp.Status}
	}
	if v == nil {
		return nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode agent answer: %w", err)
	}
	return nil
}
