package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

var errCause = errors.New("the cause")

// TestErrorCodesSurviveTheSocket: every code the daemon writes comes back
// from the client as an *Error with that code and message, for plain
// calls and for streams; the status is the code's.
func TestErrorCodesSurviveTheSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	var status atomic.Int64 // the race detector sees no order through the socket
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code := Code(strings.TrimPrefix(r.URL.Path, "/api/v0/"))
		rec := httptest.NewRecorder()
		// Wrapped twice: the code is found down the chain, the message
		// is the whole one.
		WriteError(rec, fmt.Errorf("outer: %w", NewError(code, fmt.Errorf("inner: %w", errCause))))
		status.Store(int64(rec.Code))
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
	})}
	go srv.Serve(l)
	defer srv.Close()
	c := NewClient(sock)
	preds := map[Code]func(error) bool{
		CodeBadRequest: IsBadRequest, CodeNotFound: IsNotFound, CodeNotAllowed: IsNotAllowed,
		CodeRejected: IsRejected, CodeUnavailable: IsUnavailable, CodeInternal: IsInternal,
	}
	wantStatus := map[Code]int{
		CodeBadRequest: 400, CodeNotFound: 404, CodeNotAllowed: 403,
		CodeRejected: 422, CodeUnavailable: 503, CodeInternal: 500,
	}
	for code, is := range preds {
		for _, call := range []func() error{
			func() error { return c.Get(context.Background(), "/api/v0/"+string(code), nil, nil) },
			func() error { return c.Post(context.Background(), "/api/v0/"+string(code), struct{}{}, nil) },
			func() error {
				return c.PostStream(context.Background(), "/api/v0/"+string(code), struct{}{}, func([]byte) error { return nil })
			},
		} {
			err := call()
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("%s: %T %v is not an *api.Error", code, err, err)
			}
			if e.Code != code || e.Error() != "outer: inner: the cause" {
				t.Errorf("%s: rebuilt %+v", code, e)
			}
			if got := int(status.Load()); got != wantStatus[code] || e.HTTPStatus() != got {
				t.Errorf("%s: answered %d, HTTPStatus %d, want %d", code, got, e.HTTPStatus(), wantStatus[code])
			}
			for other, pred := range preds {
				if pred(err) != (other == code) {
					t.Errorf("%s: Is %s = %v", code, other, pred(err))
				}
			}
			if !is(fmt.Errorf("wrapped again: %w", err)) {
				t.Errorf("%s: predicate does not see through wrapping", code)
			}
			if e.Unwrap() != nil {
				t.Errorf("%s: a rebuilt error has a cause: %v", code, e.Unwrap())
			}
		}
	}
}

func TestErrorDaemonSide(t *testing.T) {
	e := NewError(CodeNotAllowed, fmt.Errorf("build x: %w", errCause))
	if !errors.Is(e, errCause) {
		t.Error("the daemon-side error does not unwrap to its cause")
	}
	if CodeOf(errCause) != "" || CodeOf(nil) != "" {
		t.Error("CodeOf of a plain error is not empty")
	}
	// An error with no code is an internal one.
	rec := httptest.NewRecorder()
	WriteError(rec, errCause)
	var body Error
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 500 || body.Code != CodeInternal || body.Message != "the cause" {
		t.Errorf("plain error answered %d %+v", rec.Code, body)
	}
	if got := rec.Header().Get("Content-Type"); got != "application/json" {
		t.Errorf("content type %q", got)
	}
	if Code("from_the_future").HTTPStatus() != 500 {
		t.Error("an unknown code is not a 500")
	}
}

// TestErrorFromOldOrOddAnswers: a body without a code (an older daemon)
// or not JSON at all still gives an *Error, its code from the status.
func TestErrorFromOldOrOddAnswers(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
		code   Code
		msg    string
	}{
		{403, `{"error":"not allowed by the trust policy"}`, CodeNotAllowed, "not allowed by the trust policy"},
		{422, `{"error":"announce: nope"}`, CodeRejected, "announce: nope"},
		{404, `{"error":"no such endpoint"}`, CodeNotFound, "no such endpoint"},
		{400, `{"error":"bad"}`, CodeBadRequest, "bad"},
		{405, `{"error":"method"}`, CodeBadRequest, "method"},
		{503, "", CodeUnavailable, "daemon answered 503: Service Unavailable"},
		{504, "timeout", CodeUnavailable, "daemon answered 504: timeout"},
		{502, "<html>proxy</html>\n", CodeInternal, "daemon answered 502: <html>proxy</html>"},
		{500, `{"code":"from_the_future","error":"new"}`, Code("from_the_future"), "new"},
	} {
		e := errorFromResponse(tc.status, []byte(tc.body))
		if e.Code != tc.code || e.Message != tc.msg {
			t.Errorf("%d %q: got %q %q, want %q %q", tc.status, tc.body, e.Code, e.Message, tc.code, tc.msg)
		}
	}
}

func TestFetchEventErr(t *testing.T) {
	if err := (FetchEvent{Progress: &FetchProgress{}}).Err(); err != nil {
		t.Errorf("progress event has error %v", err)
	}
	var ev FetchEvent
	if err := json.Unmarshal([]byte(`{"error":"build x: not allowed","code":"not_allowed"}`), &ev); err != nil {
		t.Fatal(err)
	}
	if err := ev.Err(); !IsNotAllowed(err) || err.Error() != "build x: not allowed" {
		t.Errorf("event error %v", err)
	}
	if err := (FetchEvent{Error: "old daemon"}).Err(); !IsInternal(err) {
		t.Errorf("event error without code: %v", err)
	}
}
