#!/usr/bin/python3
"""Verify an ACME request body: a flattened JWS JSON (RFC 8555 section 6.2).

Usage: /usr/bin/python3 tests/tools/jws_verify.py JWS.json KEY.jwk.json

Checks the signature with the given JWK (public key JSON), that the protected
header has "alg", "nonce", "url" and exactly one of "jwk" / "kid", that there
is no unprotected header and a single signature, and, when the header carries
a "jwk", that it is a public key equal to KEY and that it verifies too.
On success prints the decoded payload to stdout and exits 0; otherwise prints
a message to stderr and exits 1. Needs Debian's python3-jwcrypto.
"""
import json
import sys

from jwcrypto import jwk, jws


class Failure(Exception):
    pass


def load_json(path):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError) as e:
        raise Failure("cannot read JSON from %s: %s" % (path, e))


def verify(jws_path, key_path):
    body = load_json(jws_path)
    key_json = load_json(key_path)
    if not isinstance(body, dict):
        raise Failure("JWS is not a JSON object")
    if "signatures" in body:
        raise Failure("general JWS serialization (multiple signatures); "
                      "ACME needs the flattened form")
    if "header" in body:
        raise Failure("JWS has an unprotected header")
    for member in ("protected", "payload", "signature"):
        if not isinstance(body.get(member), str):
            raise Failure("JWS member %r missing or not a string" % member)

    try:
        key = jwk.JWK(**key_json)
    except Exception as e:  # jwcrypto raises several types here
        raise Failure("bad JWK in %s: %s" % (key_path, e))

    raw = json.dumps(body)
    obj = jws.JWS()
    try:
        obj.deserialize(raw)
        header = json.loads(obj.objects["protected"])
    except Exception as e:
        raise Failure("cannot parse JWS: %s" % e)

    for member in ("alg", "nonce", "url"):
        if member not in header:
            raise Failure("protected header lacks %r: %s" % (member, header))
    alg = header["alg"]
    if not isinstance(alg, str) or alg == "none" or alg.startswith("HS"):
        raise Failure("alg %r is not allowed in ACME" % (alg,))
    if ("jwk" in header) == ("kid" in header):
        raise Failure("protected header must have exactly one of jwk/kid: %s"
                      % header)

    try:
        obj.verify(key)
    except Exception as e:
        raise Failure("signature does not verify with %s: %s" % (key_path, e))

    if "jwk" in header:
        try:
            hkey = jwk.JWK(**header["jwk"])
        except Exception as e:
            raise Failure("bad jwk in protected header: %s" % e)
        if hkey.has_private:
            raise Failure("jwk in protected header contains a private key")
        if hkey.thumbprint() != key.thumbprint():
            raise Failure("jwk in protected header differs from %s" % key_path)
        check = jws.JWS()
        try:
            check.deserialize(raw)
            check.verify(hkey)
        except Exception as e:
            raise Failure("signature does not verify with header jwk: %s" % e)

    return obj.payload


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: %s JWS.json KEY.jwk.json\n" % argv[0])
        return 1
    try:
        payload = verify(argv[1], argv[2])
    except Failure as e:
        sys.stderr.write("jws_verify: FAIL: %s\n" % e)
        return 1
    sys.stdout.buffer.write(payload + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
