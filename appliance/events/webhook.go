package events

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"time"
)

// Retry backoff (webhooks and mail): retry n (0-based) waits a random time in
// [d/2, d) where d = webhookBackoffBase * 2^n, capped at webhookBackoffMax
// ("equal jitter").
const (
	webhookBackoffBase = time.Second
	webhookBackoffMax  = 30 * time.Second
	webhookMaxBody     = 64 << 10 // response bytes read before closing
)

// errRetryable marks a webhook failure worth another attempt.
var errRetryable = errors.New("retryable")

// postWebhook POSTs body to a.URL, with a.Timeout per attempt and up to
// a.Retries more attempts after network errors, timeouts, 5xx, 408 and 429
// answers. Success is a 2xx answer. Other 4xx answers and redirects fail at
// once.
func postWebhook(ctx context.Context, client *http.Client, a ActionConfig, eventType Type, body []byte, base time.Duration) error {
	err := retry(ctx, a.Retries, base, func(ctx context.Context) error {
		return postOnce(ctx, client, a, eventType, body)
	})
	if err != nil {
		return fmt.Errorf("post webhook %s: %w", a.URL, err)
	}
	return nil
}

// retry calls attempt, then again up to retries more times while it fails
// with an error wrapping errRetryable, waiting backoff(base, n) before retry
// n. It returns the last error, or ctx's error if ctx ends while waiting.
func retry(ctx context.Context, retries int, base time.Duration, attempt func(context.Context) error) error {
	var err error
	for n := 0; n <= retries; n++ {
		if n > 0 {
			t := time.NewTimer(backoff(base, n-1))
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("%w (after %d attempts, the last: %w)", ctx.Err(), n, err)
			case <-t.C:
			}
		}
		err = attempt(ctx)
		if err == nil || !errors.Is(err, errRetryable) {
			return err
		}
		if n < retries {
			err = fmt.Errorf("attempt %d: %w", n+1, err)
		}
	}
	return err
}

func postOnce(ctx context.Context, client *http.Client, a ActionConfig, eventType Type, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, a.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "shoal-events")
	req.Header.Set("X-Shoal-Event", string(eventType))
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %w", errRetryable, err) // network error or timeout
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, webhookMaxBody))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests:
		return fmt.Errorf("%w: status %s", errRetryable, resp.Status)
	default:
		return fmt.Errorf("status %s", resp.Status)
	}
}

// backoff returns the wait before retry n (0-based).
func backoff(base time.Duration, n int) time.Duration {
	d := base
	for i := 0; i < n && d < webhookBackoffMax; i++ {
		d *= 2
	}
	d = min(d, webhookBackoffMax)
	half := d / 2
	return half + rand.N(half+1)
}

// newWebhookClient returns the HTTP client webhooks use: no redirects
// (a 3xx is a failure), timeouts per attempt come from the context.
func newWebhookClient() *http.Client {
	return &http.Client{
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
