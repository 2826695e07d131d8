package api

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Device request headers.
const (
	HeaderDevice    = "Hotfleet-Device"    // the device id
	HeaderTime      = "Hotfleet-Time"      // unix seconds when signed
	HeaderSignature = "Hotfleet-Signature" // base64 Ed25519 signature of SigningString
)

// MaxSkew is how far a signed request's time may be from the server's
// clock: it bounds replay of a captured request and tolerates clocks that
// NTP has not yet corrected.
const MaxSkew = 5 * time.Minute

// SigningString is what a device signs: the method, the path with its
// query, the time and the body's SHA-256, so a signature is good for one
// request only.
func SigningString(method, pathAndQuery string, unix int64, body []byte) []byte {
	sum := sha256.Sum256(body)
	return []byte("hotfleet-device-v1\n" + method + "\n" + pathAndQuery + "\n" + strconv.FormatInt(unix, 10) + "\n" + hex.EncodeToString(sum[:]))
}

// Sign sets the device headers on r for body.
func Sign(r *http.Request, device int64, key ed25519.PrivateKey, body []byte, now time.Time) {
	unix := now.Unix()
	sig := ed25519.Sign(key, SigningString(r.Method, r.URL.RequestURI(), unix, body))
	r.Header.Set(HeaderDevice, strconv.FormatInt(device, 10))
	r.Header.Set(HeaderTime, strconv.FormatInt(unix, 10))
	r.Header.Set(HeaderSignature, base64.StdEncoding.EncodeToString(sig))
}

// ErrBadSignature is returned for a request whose signature does not verify.
var ErrBadSignature = errors.New("request signature does not verify")

// SignedDevice returns the device id a request claims, before it is verified.
func SignedDevice(r *http.Request) (int64, error) {
	s := r.Header.Get(HeaderDevice)
	if s == "" {
		return 0, fmt.Errorf("missing %s header: device requests must be signed; enroll the agent first", HeaderDevice)
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("%s header %q: want a positive device id", HeaderDevice, s)
	}
	return id, nil
}

// Verify checks a request's signature with the device's public key.
func Verify(r *http.Request, pub ed25519.PublicKey, body []byte, now time.Time) error {
	ts, err := strconv.ParseInt(r.Header.Get(HeaderTime), 10, 64)
	if err != nil {
		return fmt.Errorf("%s header %q: want unix seconds", HeaderTime, r.Header.Get(HeaderTime))
	}
	if d := now.Sub(time.Unix(ts, 0)); d > MaxSkew || d < -MaxSkew {
		return fmt.Errorf("request signed at %s, %s from the server's clock (more than %s): correct the device's clock", time.Unix(ts, 0).UTC().Format(time.RFC3339), d.Round(time.Second), MaxSkew)
	}
	sig, err := base64.StdEncoding.DecodeString(r.Header.Get(HeaderSignature))
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%s header: want a base64 Ed25519 signature: %w", HeaderSignature, ErrBadSignature)
	}
	if len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, SigningString(r.Method, r.URL.RequestURI(), ts, body), sig) {
		return ErrBadSignature
	}
	return nil
}
