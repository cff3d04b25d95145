/*
 * auth.h - mutual challenge-response over a cluster secret.
 *
 * Both sides hold the same secret file; the key is a BLAKE2b hash of its
 * contents. The client sends a nonce and the node answers with its own. The
 * client proves itself first with HMAC-SHA-512/256(key, "client" | node
 * nonce | client nonce), so the node can refuse and log a stranger before it
 * reveals anything; the node's acceptance carries HMAC(key, "node" | client
 * nonce | node nonce), and the client trusts the node only if it checks.
 * Distinct labels stop a reflection of one side's proof as the other's;
 * fresh nonces on both sides stop replays. The secret never crosses the wire. libsodium provides the
 * primitives and constant-time comparison.
 */
#ifndef EM_AUTH_H
#define EM_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/wire.h"

#define EM_KEY_LEN 32

/* Loads and hashes the secret file. 0, -EINVAL for a secret shorter than
 * 16 bytes, -EPERM for a regular file that group or others may read or
 * write (chmod 600), or another -errno from reading it. */
int em_key_load(const char *path, uint8_t key[EM_KEY_LEN]);
void em_auth_nonce(uint8_t nonce[EM_NONCE_LEN]);
/* Session tokens never cross the wire. Each side's nonce is an ephemeral
 * X25519 public key; the token of a new session is a hash, keyed by the
 * cluster key, of the Diffie-Hellman result and both nonces, so a pool
 * member who only watches the traffic cannot compute it. A connection that
 * attaches to the session sends em_auth_attach_proof(token, its nonces)
 * instead, useless on any other connection. */
void em_auth_keypair(uint8_t pk[EM_NONCE_LEN], uint8_t sk[EM_NONCE_LEN]);
/* 0, or -EPROTO for a peer key of small order. With traffic not NULL,
 * also the keys of an encrypted connection (common/seal.h), from the same
 * Diffie-Hellman result: traffic[0] seals what the client sends,
 * traffic[1] what the node sends; cipher is the agreed enum em_cipher. */
int em_auth_session_token(const uint8_t key[EM_KEY_LEN], const uint8_t sk[EM_NONCE_LEN],
			  const uint8_t peer_pk[EM_NONCE_LEN], const uint8_t cn[EM_NONCE_LEN],
			  const uint8_t sn[EM_NONCE_LEN], uint8_t token[EM_TOKEN_LEN],
			  unsigned cipher, uint8_t traffic[2][EM_KEY_LEN]);
void em_auth_attach_proof(const uint8_t token[EM_TOKEN_LEN], const uint8_t cn[EM_NONCE_LEN],
			  const uint8_t sn[EM_NONCE_LEN], uint8_t out[EM_TOKEN_LEN]);
void em_auth_proof(const uint8_t key[EM_KEY_LEN], int node_side, const uint8_t first[EM_NONCE_LEN],
		   const uint8_t second[EM_NONCE_LEN], uint8_t proof[EM_PROOF_LEN]);
/* Constant-time; 0 when equal. */
int em_auth_check(const uint8_t a[EM_PROOF_LEN], const uint8_t b[EM_PROOF_LEN]);
void em_random(void *buf, size_t len);
/* Zeroes key material so the compiler cannot skip it. */
void em_secure_zero(void *p, size_t len);
/* Constant-time equality of two byte strings. */
bool em_ct_equal(const void *a, const void *b, size_t len);

#endif
