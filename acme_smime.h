/*
 * acme_smime.h -- ACME for S/MIME (RFC 8823 over RFC 8555) for embedded devices.
 *
 * One header, one source file (acme_smime.c). Link with BearSSL; jsmn is
 * included from the system by the source file. The library never allocates:
 * every structure below is owned by the caller, every output goes into a
 * buffer the caller passes together with its size.
 *
 * This header is the whole public API. It is laid out as:
 *
 *   1. compile-time limits (override any of them with -D or before including)
 *   2. result and error codes
 *   3. keys: generation, JWK thumbprint
 *   4. RFC 8823 helpers for callers with their own mailbox code:
 *      the digest, the challenge-mail check, the response-mail writer
 *   5. ACME building blocks for callers with their own HTTP transport:
 *      the signed request body (JWS), the CSR, the newOrder payload,
 *      the email-reply-00 challenge of an authorization
 *
 * All functions are reentrant and keep no global state. Strings are
 * NUL-terminated ASCII unless a length is passed next to them.
 */
#ifndef ACME_SMIME_H
#define ACME_SMIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * 1. Compile-time limits
 *
 * Each limit bounds a fixed field or a scan; input longer than a limit is
 * refused with a clear error, never truncated.
 * ---------------------------------------------------------------------- */

/* Longest URL accepted from the server (directory, order, challenge...). */
#ifndef ACME_SMIME_MAX_URL
#define ACME_SMIME_MAX_URL 256
#endif

/* Longest mailbox address (RFC 5321 path limit is 256 including <>). */
#ifndef ACME_SMIME_MAX_ADDR
#define ACME_SMIME_MAX_ADDR 254
#endif

/* Longest token part (base64url characters) taken from a Subject or from a
 * challenge object. 128 characters carry 768 bits, far above the 128-bit
 * minimum of RFC 8823. */
#ifndef ACME_SMIME_MAX_TOKEN
#define ACME_SMIME_MAX_TOKEN 128
#endif

/* Longest header field value we unfold and examine (Subject, From, To,
 * Reply-To, Auto-Submitted, Message-ID, References). Other fields are
 * skipped without being copied. */
#ifndef ACME_SMIME_MAX_HEADER
#define ACME_SMIME_MAX_HEADER 1024
#endif

/* Longest Message-ID kept for In-Reply-To, and References kept for the
 * response's References field. */
#ifndef ACME_SMIME_MAX_MSGID
#define ACME_SMIME_MAX_MSGID 250
#endif
#ifndef ACME_SMIME_MAX_REFERENCES
#define ACME_SMIME_MAX_REFERENCES 500
#endif

/* Reply-To addresses kept from a challenge mail (the response goes to all). */
#ifndef ACME_SMIME_MAX_REPLY_TO
#define ACME_SMIME_MAX_REPLY_TO 4
#endif

/* JSON tokens available to parse one server object (each costs 20 bytes). */
#ifndef ACME_SMIME_JSON_TOKENS
#define ACME_SMIME_JSON_TOKENS 96
#endif

/* Deepest JSON nesting accepted (ACME objects nest 3 levels at most). */
#ifndef ACME_SMIME_JSON_MAX_DEPTH
#define ACME_SMIME_JSON_MAX_DEPTH 8
#endif

/* ------------------------------------------------------------------------
 * 2. Result and error codes
 *
 * Functions return a non-negative value (often a length) on success and one
 * of these negative codes on failure. acme_smime_strerror() names them.
 * ---------------------------------------------------------------------- */

#define ACME_SMIME_OK 0
#define ACME_SMIME_ERR_INVALID   (-1)  /* an argument is malformed or missing */
#define ACME_SMIME_ERR_BUFFER    (-2)  /* an output buffer is too small */
#define ACME_SMIME_ERR_LIMIT     (-3)  /* input exceeds a compile-time limit */
#define ACME_SMIME_ERR_ENCODING  (-4)  /* bad base64/base64url input */
#define ACME_SMIME_ERR_JSON      (-5)  /* malformed JSON */
#define ACME_SMIME_ERR_CRYPTO    (-6)  /* key generation or signing failed */
#define ACME_SMIME_ERR_ENTROPY   (-7)  /* the entropy hook failed */
#define ACME_SMIME_ERR_UNSUPPORTED (-8) /* key type or feature not built in */
#define ACME_SMIME_ERR_MAIL      (-9)  /* challenge mail refused (see reason) */

/* A one-line English description of a code above; never NULL. */
const char *acme_smime_strerror(int code);

/* ------------------------------------------------------------------------
 * 3. Keys
 *
 * Keys are plain caller-owned structures. The private part is secret: the
 * library never logs it and wipes its own copies; call acme_smime_key_wipe()
 * when you are done with one.
 * ---------------------------------------------------------------------- */

#define ACME_SMIME_KEY_P256 1   /* ECDSA P-256, JWS alg ES256 (default) */
#define ACME_SMIME_KEY_P384 2   /* ECDSA P-384, JWS alg ES384 */

typedef struct acme_smime_key {
	int type;                   /* ACME_SMIME_KEY_*; 0 = no key */
	size_t priv_len;            /* 32 (P-256) or 48 (P-384) */
	unsigned char priv[48];     /* big-endian private scalar */
	size_t pub_len;             /* 65 or 97 */
	unsigned char pub[97];      /* uncompressed point 0x04 || X || Y */
} acme_smime_key;

/* Entropy source: fill buf with len unpredictable bytes; return 0 on
 * success, non-zero on failure. user is passed back unchanged. */
typedef int (*acme_smime_entropy_fn)(void *user, unsigned char *buf, size_t len);

/* Generate a fresh key of the given type. 48 bytes of entropy seed an
 * HMAC-DRBG (SHA-256) from which BearSSL draws the scalar; the seed and the
 * DRBG state are wiped before return. Returns ACME_SMIME_OK or an error. */
int acme_smime_key_generate(acme_smime_key *key, int type,
	acme_smime_entropy_fn entropy, void *entropy_user);

/* Load a key from its private scalar (big-endian, priv_len bytes) and
 * compute the public point. Returns ACME_SMIME_OK or an error. */
int acme_smime_key_from_private(acme_smime_key *key, int type,
	const unsigned char *priv, size_t priv_len);

/* Overwrite the whole structure with zeros. */
void acme_smime_key_wipe(acme_smime_key *key);

/* RFC 7638 JWK thumbprint (SHA-256, base64url, 43 characters + NUL) of the
 * key's public part: the value that ends every RFC 8555 key authorization.
 * out must hold ACME_SMIME_THUMBPRINT_SIZE bytes. */
#define ACME_SMIME_THUMBPRINT_SIZE 44
int acme_smime_jwk_thumbprint(const acme_smime_key *key,
	char out[ACME_SMIME_THUMBPRINT_SIZE]);

/* ------------------------------------------------------------------------
 * 4. RFC 8823 helpers
 *
 * For a caller who fetches and sends mail with its own code. The flow is:
 *
 *   acme_smime_check_challenge_mail()  -- is this mail our challenge?
 *   acme_smime_rfc8823_digest()        -- token-part1 + token-part2 + key
 *   acme_smime_write_response_mail()   -- the reply to submit over SMTP
 *
 * and only then the POST of {} to the challenge URL (RFC 8823 section 3).
 * ---------------------------------------------------------------------- */

/* How token-part1 and token-part2 are joined (RFC 8823 is ambiguous):
 * STRING joins the texts, part1 exactly as received (acme4j, Pebble's
 * RFC 8823 branch, acme2certifier); BYTES decodes both parts, joins the
 * bytes and re-encodes (acmez, CASTLE's own client). */
#define ACME_SMIME_CONCAT_STRING 0
#define ACME_SMIME_CONCAT_BYTES  1

/* The digest that goes into the response mail:
 * base64url(SHA-256(token || "." || thumbprint)), 43 characters + NUL.
 * Whitespace inside part1 is ignored; '=' padding in either part is
 * accepted (kept verbatim in STRING mode). */
#define ACME_SMIME_DIGEST_SIZE 44
int acme_smime_rfc8823_digest(const char *token_part1, const char *token_part2,
	const char *thumbprint, int concat_mode, char out[ACME_SMIME_DIGEST_SIZE]);

/* Challenge-mail policy flags. The default (0) is strict: every check of
 * RFC 8823 section 3.1 applies, including authenticity (DKIM or S/MIME).
 * Authenticity verification is not built into this release, so a strict
 * check refuses every mail with ACME_SMIME_MAIL_UNSIGNED; the relaxed flags
 * exist for CAs that do not sign or do not set Auto-Submitted (Pebble's
 * RFC 8823 branch, acme2certifier). Using them weakens the protection
 * against forged challenges: log it. */
#define ACME_SMIME_MAIL_ALLOW_UNSIGNED      0x01u
#define ACME_SMIME_MAIL_ALLOW_NO_AUTOSUBMIT 0x02u

/* What the caller knows of the pending challenge. */
typedef struct acme_smime_pending {
	const char *identifier;  /* our mailbox, the "email" identifier */
	const char *from;        /* the challenge object's "from" */
	unsigned policy;         /* ACME_SMIME_MAIL_* flags */
} acme_smime_pending;

/* Why a mail was refused (ACME_SMIME_MAIL_OK when it was accepted). */
enum acme_smime_mail_reason {
	ACME_SMIME_MAIL_OK = 0,
	ACME_SMIME_MAIL_MALFORMED,        /* no header/body structure, NUL byte */
	ACME_SMIME_MAIL_HEADER_TOO_LONG,  /* a field exceeds ACME_SMIME_MAX_HEADER */
	ACME_SMIME_MAIL_NO_SUBJECT,
	ACME_SMIME_MAIL_DUPLICATE_FIELD,  /* two From, To, Subject, ... fields */
	ACME_SMIME_MAIL_BAD_ENCODED_WORD, /* broken RFC 2047 encoded-word */
	ACME_SMIME_MAIL_BAD_CHARSET,      /* encoded-word not UTF-8/US-ASCII */
	ACME_SMIME_MAIL_REPLY_SUBJECT,    /* Re:/Fwd: -- never answer replies */
	ACME_SMIME_MAIL_NOT_ACME_SUBJECT, /* Subject does not start "ACME:" */
	ACME_SMIME_MAIL_BAD_TOKEN,        /* token-part1 not base64url */
	ACME_SMIME_MAIL_SHORT_TOKEN,      /* token-part1 under 128 bits */
	ACME_SMIME_MAIL_LONG_TOKEN,       /* over ACME_SMIME_MAX_TOKEN */
	ACME_SMIME_MAIL_NO_FROM,
	ACME_SMIME_MAIL_BAD_FROM,         /* From is not exactly one mailbox */
	ACME_SMIME_MAIL_FROM_MISMATCH,    /* From != challenge "from" */
	ACME_SMIME_MAIL_NO_TO,
	ACME_SMIME_MAIL_BAD_TO,           /* To cannot be parsed */
	ACME_SMIME_MAIL_TO_MISMATCH,      /* To lacks our identifier */
	ACME_SMIME_MAIL_NO_AUTO_SUBMITTED,
	ACME_SMIME_MAIL_NOT_AUTO_GENERATED,
	ACME_SMIME_MAIL_BAD_REPLY_TO,     /* unparsable, or too many addresses */
	ACME_SMIME_MAIL_UNSIGNED,         /* authenticity not established */
	ACME_SMIME_MAIL_BAD_ARGUMENT,     /* the pending challenge is incomplete */
	ACME_SMIME_MAIL_REASON_COUNT
};

/* The result of a check. On acceptance the fields hold what the response
 * needs; on refusal reason says why and the other fields are unspecified. */
typedef struct acme_smime_mail_verdict {
	int reason;                                   /* acme_smime_mail_reason */
	char token_part1[ACME_SMIME_MAX_TOKEN + 1];   /* whitespace removed */
	/* Where the response goes: the Reply-To addresses, else the From. */
	unsigned reply_count;
	char reply_to[ACME_SMIME_MAX_REPLY_TO][ACME_SMIME_MAX_ADDR + 1];
	char message_id[ACME_SMIME_MAX_MSGID + 1];    /* "<...>" or "" */
	char references[ACME_SMIME_MAX_REFERENCES + 1]; /* raw, or "" */
} acme_smime_mail_verdict;

/* Check a raw challenge mail (RFC 5322 text, CRLF or LF line ends; the body
 * may be absent) against the pending challenge. Fills *verdict and returns
 * ACME_SMIME_OK when the mail may be answered, ACME_SMIME_ERR_MAIL when it
 * must be ignored (verdict->reason says why), ACME_SMIME_ERR_INVALID when an
 * argument is NULL. The mail is only read. */
int acme_smime_check_challenge_mail(const char *mail, size_t mail_len,
	const acme_smime_pending *pending, acme_smime_mail_verdict *verdict);

/* A one-line English text for a refusal reason; never NULL. */
const char *acme_smime_mail_reason_text(int reason);

/* The response mail (RFC 8823 section 3.2). */
typedef struct acme_smime_response {
	const char *from;             /* our identifier (addr-spec) */
	const acme_smime_mail_verdict *challenge; /* from the accepted check */
	const char *digest;           /* 43 characters, from the digest helper */
	const char *message_id;       /* ours, "<unique@domain>", or NULL */
	uint64_t date;                /* Unix seconds; 0 = no Date field */
} acme_smime_response;

/* Write the response mail into out (CRLF line ends, 7bit text/plain, the
 * digest on one line between the RFC 8823 delimiter lines). It is NUL
 * terminated; the return value is its length without the NUL, or
 * ACME_SMIME_ERR_BUFFER when out is too small (nothing useful is left in
 * out then), or ACME_SMIME_ERR_INVALID for a bad field. SMTP dot-stuffing is
 * the transport's job and is not applied here. 1024 bytes always suffice
 * with the default limits and one reply address. */
int acme_smime_write_response_mail(char *out, size_t out_size,
	const acme_smime_response *response);

/* ------------------------------------------------------------------------
 * 5. ACME building blocks
 *
 * The pieces of RFC 8555 that need no network, for a caller who moves the
 * bytes with its own HTTP client. Each writes into a caller buffer and
 * returns the length written (the text is NUL-terminated), or an error.
 * ---------------------------------------------------------------------- */

/* Identifier types of an order. */
#define ACME_SMIME_ID_EMAIL 1   /* RFC 8823 "email": rfc822Name in the CSR */
#define ACME_SMIME_ID_DNS   2   /* RFC 8555 "dns": dNSName in the CSR */

typedef struct acme_smime_identifier {
	int type;                /* ACME_SMIME_ID_* */
	const char *value;       /* ASCII address or host name */
} acme_smime_identifier;

/* Most identifiers in one order and one CSR. */
#ifndef ACME_SMIME_MAX_IDENTIFIERS
#define ACME_SMIME_MAX_IDENTIFIERS 10
#endif

/* The signed body of an ACME POST (RFC 8555 section 6.2): a flattened JWS
 * with alg ES256 (P-256 key) or ES384 (P-384), the server's nonce, the
 * exact request URL and either kid (the account URL) or, when kid is NULL,
 * the account's public JWK (newAccount only). payload is JSON text; pass
 * "" for POST-as-GET and "{}" to answer a challenge. The signature is
 * verified before return (a fault during signing would leak the key). */
int acme_smime_jws_sign(char *out, size_t out_size, const acme_smime_key *key,
	const char *nonce, const char *url, const char *kid,
	const char *payload, size_t payload_len);

/* Key-usage profiles of the CSR (RFC 8823 section 3.3). For EC keys
 * encryption means keyAgreement, never keyEncipherment. */
#define ACME_SMIME_KU_DUAL    0  /* digitalSignature + keyAgreement */
#define ACME_SMIME_KU_SIGN    1  /* digitalSignature */
#define ACME_SMIME_KU_ENCRYPT 2  /* keyAgreement */
#define ACME_SMIME_KU_NONE    3  /* no keyUsage extension: CA decides */

/* A PKCS#10 certificate request in DER, signed by key (which must not be
 * the account key): subject CN = the first identifier when it fits the
 * 64-character X.520 bound (else an empty subject), one subjectAltName
 * entry per identifier (rfc822Name for email, dNSName for dns) and the
 * keyUsage of the profile, critical. No other extension: some CAs refuse
 * any. Returns the DER length. 512 bytes hold one identifier. */
int acme_smime_csr_write(unsigned char *out, size_t out_size,
	const acme_smime_key *key, const acme_smime_identifier *ids,
	size_t id_count, int ku_profile);

/* The newOrder payload {"identifiers":[{"type":"email","value":...},...]}. */
int acme_smime_order_payload(char *out, size_t out_size,
	const acme_smime_identifier *ids, size_t id_count);

/* The challenge of an authorization object that a client acts on. */
typedef struct acme_smime_challenge {
	char status[16];                      /* "pending", "valid", ... */
	char url[ACME_SMIME_MAX_URL + 1];
	char token[ACME_SMIME_MAX_TOKEN + 1]; /* token-part2 for email-reply-00 */
	char from[ACME_SMIME_MAX_ADDR + 1];   /* email-reply-00 only */
} acme_smime_challenge;

/* Find the challenge of the given type (e.g. "email-reply-00") in an
 * authorization object (RFC 8555 section 7.1.4) and copy its fields, with
 * JSON escapes decoded. An email-reply-00 challenge without "from" or
 * "token" is refused. Returns ACME_SMIME_OK, ACME_SMIME_ERR_JSON (malformed
 * or no such challenge) or ACME_SMIME_ERR_LIMIT (a field or the token
 * count is over its limit). Uses ACME_SMIME_JSON_TOKENS tokens of stack
 * (20 bytes each). */
int acme_smime_parse_authorization(const char *json, size_t json_len,
	const char *type, acme_smime_challenge *challenge);

#ifdef __cplusplus
}
#endif

#endif /* ACME_SMIME_H */
