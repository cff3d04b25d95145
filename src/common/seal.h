/*
 * seal.h - the encrypted record layer of a TCP connection (--encrypt).
 *
 * Once both sides have authenticated, each direction of the stream is a
 * sequence of records: a 4-byte little-endian plaintext length, then that
 * many bytes of ciphertext, then a 16-byte tag. The plaintext of the records,
 * concatenated, is exactly the message stream of wire.h, so everything above
 * this layer is unchanged. A record holds at most EM_SEAL_MAX bytes; a length
 * outside 1..EM_SEAL_MAX is refused before anything is read into memory.
 *
 * Each direction has its own key (common/auth.h derives both from the
 * handshake) and a record counter that is the nonce: the n-th record of a
 * direction is sealed under nonce n, and the receiver opens it only under
 * the n it expects. A replayed, reordered, dropped, truncated or altered
 * record therefore fails its tag, and the connection must be closed. The
 * length is the tag's associated data, so it cannot be altered either.
 *
 * The layer never touches a socket: the caller receives ciphertext into the
 * room the seal gives it and takes plaintext out, so its own waiting rules
 * (spins, deadlines, draining replies while sending) stay as they are.
 */
#ifndef EM_SEAL_H
#define EM_SEAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#define EM_SEAL_MAX (64u << 10) /* plaintext bytes per record */
#define EM_SEAL_HDR 4
#define EM_SEAL_TAG 16
#define EM_SEAL_REC_MAX (EM_SEAL_HDR + EM_SEAL_MAX + EM_SEAL_TAG)
#define EM_SEAL_KEY_LEN 32

/* The cipher both sides agreed on in the handshake. */
enum em_cipher {
	EM_CIPHER_AES256GCM = 1,         /* where the CPU has AES instructions */
	EM_CIPHER_XCHACHA20POLY1305 = 2, /* everywhere else */
};

struct em_seal;

/* Whether this CPU can use AES-256-GCM. */
bool em_seal_aes_available(void);
const char *em_cipher_name(int cipher);
/* One direction's state; key is copied. NULL on allocation failure or an
 * unknown cipher. */
struct em_seal *em_seal_create(int cipher, const uint8_t key[EM_SEAL_KEY_LEN]);
void em_seal_destroy(struct em_seal *s);

/* ---- sending ---- */

/* Takes up to EM_SEAL_MAX bytes from the front of iov[0..*n) (moving *iov
 * and *n past what it took, and trimming a partly taken iovec in place)
 * and seals them into one record in the seal's buffer. Returns the record's
 * length (*rec points at it), 0 when the iovecs are empty, or -EOVERFLOW
 * when the counter is spent (after 2^64 records; then close). */
ssize_t em_seal_wrap(struct em_seal *s, struct iovec **iov, int *n, const uint8_t **rec);

/* ---- receiving ---- */

/* Where ciphertext received from the socket goes: returns how many bytes
 * fit at *p (never 0). */
size_t em_seal_room(struct em_seal *s, uint8_t **p);
/* The caller put n bytes at the room. */
void em_seal_fill(struct em_seal *s, size_t n);
/* Copies up to len plaintext bytes into dst, opening the next buffered
 * record if needed. Returns the bytes copied, 0 if no whole record is
 * buffered, -EPROTO for a length outside the bounds, -EBADMSG for a record
 * whose tag does not verify. After an error the seal stays failed.
 * direct: a record that fits in what is left of dst is opened straight into
 * it, saving a copy - but dst may then hold garbage when the record fails,
 * so only for memory that an error makes meaningless anyway (a client's
 * read buffer), never for memory others see (a node's region). */
ssize_t em_seal_read(struct em_seal *s, void *dst, size_t len, bool direct);
/* Whether em_seal_read would return something without more ciphertext
 * (plaintext is waiting, or a whole record is buffered). */
bool em_seal_ready(const struct em_seal *s);
/* Whether ciphertext of a record not yet whole is buffered. */
bool em_seal_partial(const struct em_seal *s);

#endif
