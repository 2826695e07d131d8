package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// maxJSONDepth bounds nesting in request bodies: no hotfleet body nests
// deeper than a handful of levels, and deep nesting only costs the decoder.
const maxJSONDepth = 32

// readBody reads at most limit bytes of the request body.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, badRequest("", "read the request body: %v", err)
	}
	if int64(len(b)) > limit {
		return nil, &httpError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("request body is over the limit of %d bytes", limit)}
	}
	return b, nil
}

// decodeJSON decodes body strictly into v: unknown fields, trailing data,
// wrong types and deep nesting are 400s naming the field.
func decodeJSON(body []byte, v any) error {
	if err := checkDepth(body); err != nil {
		return err
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te):
			return badRequest(te.Field, "field %q: got a JSON %s, want %s", te.Field, te.Value, te.Type)
		case errors.As(err, &se):
			return badRequest("", "the body is not valid JSON at byte %d: %v", se.Offset, err)
		case errors.Is(err, io.EOF):
			return badRequest("", "the body is empty; send a JSON object")
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return badRequest(f, "unknown field %q; see api/openapi.yaml for the fields of this request", f)
		}
		return badRequest("", "decode the body: %v", err)
	}
	if dec.More() {
		return badRequest("", "the body holds more than one JSON value")
	}
	return nil
}

// checkDepth refuses JSON nested deeper than maxJSONDepth without decoding it.
func checkDepth(b []byte) error {
	depth, inString, escaped := 0, false, false
	for _, c := range b {
		switch {
		case escaped:
			escaped = false
		case inString:
			if c == '\\' {
				escaped = true
			} else if c == '"' {
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			if depth > maxJSONDepth {
				return badRequest("", "the body nests deeper than %d levels", maxJSONDepth)
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return nil
}
