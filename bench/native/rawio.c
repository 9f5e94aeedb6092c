/*
 * The raw responder's I/O queue loop in C: what a target in user space reaches on this machine
 * with no Python on the data path (bench/rawnvme.py --native, bench/run.py --guest-native).
 *
 * bench/rawnvme.py brings a connection up in Python (ICReq, Connect, the admin queue) and,
 * once an I/O queue's Connect is answered, hands its socket here, one thread per queue.  This
 * loop answers exactly what the Python responder answers on an I/O queue (NVMe/TCP 1.0, no
 * digests; PDU layouts of NVMe/TCP Transport Specification section 3.6):
 *
 *   Read (opcode bits 1:0 = 10b)   -> one C2HData with LAST_PDU, the namespace's bytes from
 *                                     SLBA, then a CapsuleResp (or C2HData with SUCCESS only,
 *                                     when the queue's Connect disabled SQ flow control);
 *   Write (01b), data in capsule   -> the data placed at SLBA, then a CapsuleResp;
 *   Write, data not in the capsule -> an R2T for all of it (TTAG = CID), each H2CData's data
 *                                     placed at SLBA + DATAO, a CapsuleResp after LAST_PDU;
 *   anything else                  -> a successful CapsuleResp.
 *
 * Data moves as in the target: a Read is sent from the namespace's memory, a Write's payload
 * is received straight into it.  The only checks are the ones that keep the process alive: a
 * transfer outside the namespace completes with LBA Out of Range, an H2CData for no R2T or
 * outside its R2T, or any PDU but CapsuleCmd and H2CData, ends the queue.  The socket is
 * blocking: one thread per queue waits in recv() as a kernel io_work would wait for data.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

enum { PDU_CMD = 0x04, PDU_RSP = 0x05, PDU_H2C_DATA = 0x06, PDU_C2H_DATA = 0x07, PDU_R2T = 0x09 };
enum { FLAG_LAST_PDU = 0x04, FLAG_SUCCESS = 0x08 };
enum { CH_LEN = 8, CMD_HLEN = 72, DATA_HLEN = 24, RSP_LEN = 24, BLOCK_SIZE = 512 };
/* Generic command status: Data SGL Length Invalid, LBA Out of Range. */
enum { SC_SGL_LENGTH_INVALID = 0x0F, SC_LBA_RANGE = 0x80 };
#define RX_BUFFER (64 * 1024)   /* as the Python responder's receive buffer */
#define OUT_PDUS 64             /* answers gathered into one sendmsg() at most */

struct queue {
    int fd;
    uint8_t *ns;
    uint64_t ns_size;
    uint16_t qid, sqsize, sqhd;
    int sq_flow_disabled;
    /* Namespace byte offset and length of each outstanding R2T, by TTAG (= CID). */
    uint64_t r2t_at[65536];
    uint32_t r2t_len[65536];
    uint8_t rx[RX_BUFFER];
    /* Answers not sent yet: their headers, and the pieces of each (header, data, response). */
    uint8_t out_hdr[OUT_PDUS][DATA_HLEN + RSP_LEN];
    struct iovec out[3 * OUT_PDUS];
    int out_pdus, out_pieces;
};

static uint16_t get16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static void put16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

/* A common header: PDU type, flags, HLEN, PDO, PLEN. */
static void ch(uint8_t *p, uint8_t type, uint8_t flags, uint8_t hlen, uint8_t pdo, uint32_t plen)
{
    p[0] = type, p[1] = flags, p[2] = hlen, p[3] = pdo;
    put32(p + 4, plen);
}

/* A CapsuleResp: CQE DW0/DW1 zero, SQHD, SQID, CID, status (phase 0). */
static void capsule_resp(struct queue *q, uint8_t *p, uint16_t cid, uint16_t sc)
{
    memset(p, 0, RSP_LEN);
    ch(p, PDU_RSP, 0, RSP_LEN, 0, RSP_LEN);
    put16(p + 16, q->sqhd);
    put16(p + 18, q->qid);
    put16(p + 20, cid);
    put16(p + 22, (uint16_t)(sc << 1));
}

/* C2HData (cccid, datao 0, datal) and R2T (cccid, ttag, r2to 0, r2tl) share one layout. */
static void data_header(uint8_t *p, uint8_t type, uint8_t flags, uint16_t cid, uint32_t len)
{
    memset(p, 0, DATA_HLEN);
    ch(p, type, flags, DATA_HLEN, type == PDU_C2H_DATA ? DATA_HLEN : 0,
       DATA_HLEN + (type == PDU_C2H_DATA ? len : 0));
    put16(p + 8, cid);
    if (type == PDU_R2T)
        put16(p + 10, cid);
    put32(p + 16, len);
}

static int send_all(int fd, struct iovec *iov, int n)
{
    while (n) {
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t sent = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        while (n && (size_t)sent >= iov->iov_len) {
            sent -= (ssize_t)iov->iov_len;
            iov++, n--;
        }
        if (n) {
            iov->iov_base = (uint8_t *)iov->iov_base + sent;
            iov->iov_len -= (size_t)sent;
        }
    }
    return 0;
}

/* Send every answer gathered so far, in one sendmsg() when the socket takes it all. */
static int flush(struct queue *q)
{
    int failed = q->out_pieces ? send_all(q->fd, q->out, q->out_pieces) : 0;
    q->out_pdus = q->out_pieces = 0;
    return failed;
}

/* Room for one more answer's headers (sending what is gathered when there is none). */
static uint8_t *answer(struct queue *q)
{
    if (q->out_pdus == OUT_PDUS && flush(q))
        return NULL;
    return q->out_hdr[q->out_pdus++];
}

static void piece(struct queue *q, void *base, size_t len)
{
    q->out[q->out_pieces++] = (struct iovec){base, len};
}

static int recv_all(int fd, uint8_t *p, size_t len)
{
    while (len) {
        ssize_t got = recv(fd, p, len, MSG_WAITALL);
        if (got <= 0) {
            if (got < 0 && errno == EINTR)
                continue;
            return -1;
        }
        p += got, len -= (size_t)got;
    }
    return 0;
}

/* Payload bytes of a PDU whose header starts at rx[*start]: those already in the buffer are
 * copied to dst, the rest received straight into it.  Leaves the buffer's live bytes in
 * [*start, *end). */
static int take_payload(struct queue *q, size_t *start, size_t *end, size_t hlen, uint8_t *dst,
                        size_t len)
{
    size_t have = *end - *start - hlen;
    if (have > len)
        have = len;
    memcpy(dst, q->rx + *start + hlen, have);
    *start += hlen + have;
    if (have < len) {
        *start = *end = 0;  /* the buffer held no more than this PDU */
        return flush(q) || recv_all(q->fd, dst + have, len - have);
    }
    return 0;
}

/* One CapsuleCmd whose header is in the buffer (its in-capsule data may not all be). */
static int command(struct queue *q, size_t *start, size_t *end, uint32_t plen)
{
    const uint8_t *sqe = q->rx + *start + CH_LEN;
    uint8_t opcode = sqe[0];
    uint16_t cid = get16(sqe + 2);
    uint32_t length = get32(sqe + 32);  /* DPTR: SGL data block descriptor length */
    uint64_t offset = ((uint64_t)get32(sqe + 40) | (uint64_t)get32(sqe + 44) << 32) * BLOCK_SIZE;
    uint32_t incapsule = plen - CMD_HLEN;
    int outside = offset > q->ns_size || length > q->ns_size - offset;
    uint8_t *hdr;  /* taken once the payload is in: receiving it may send what is gathered */
    q->sqhd = (uint16_t)((q->sqhd + 1) % q->sqsize);
    if ((opcode & 3) == 2 && length && !outside) {  /* Read */
        *start += plen;
        if (!(hdr = answer(q)))
            return -1;
        uint8_t flags = FLAG_LAST_PDU | (q->sq_flow_disabled ? FLAG_SUCCESS : 0);
        data_header(hdr, PDU_C2H_DATA, flags, cid, length);
        capsule_resp(q, hdr + DATA_HLEN, cid, 0);
        piece(q, hdr, DATA_HLEN);
        piece(q, q->ns + offset, length);
        if (!q->sq_flow_disabled)
            piece(q, hdr + DATA_HLEN, RSP_LEN);
        return 0;
    }
    if ((opcode & 3) == 1 && length && !outside && !incapsule) {  /* Write: R2T for it all */
        *start += plen;
        if (!(hdr = answer(q)))
            return -1;
        q->r2t_at[cid] = offset;
        q->r2t_len[cid] = length;
        data_header(hdr, PDU_R2T, 0, cid, length);
        piece(q, hdr, DATA_HLEN);
        return 0;
    }
    uint16_t sc = 0;
    if (incapsule) {
        if ((opcode & 3) == 1 && !outside && incapsule <= length) {
            if (take_payload(q, start, end, CMD_HLEN, q->ns + offset, incapsule))
                return -1;
        } else {
            static __thread uint8_t sink[RX_BUFFER];
            size_t hlen = CMD_HLEN;
            if ((opcode & 3) == 1)  /* a Write outside the namespace, or more data than SGL */
                sc = outside ? SC_LBA_RANGE : SC_SGL_LENGTH_INVALID;
            while (incapsule) {  /* data with nowhere to go: drop it */
                size_t part = incapsule < sizeof sink ? incapsule : sizeof sink;
                if (take_payload(q, start, end, hlen, sink, part))
                    return -1;
                incapsule -= (uint32_t)part;
                hlen = 0;  /* the next part has no header before it */
            }
        }
    } else {
        *start += plen;
        sc = outside && (opcode & 3) ? SC_LBA_RANGE : 0;
    }
    if (!(hdr = answer(q)))
        return -1;
    capsule_resp(q, hdr, cid, sc);
    piece(q, hdr, RSP_LEN);
    return 0;
}

/* One H2CData whose header is in the buffer: its data into the R2T's place. */
static int h2c_data(struct queue *q, size_t *start, size_t *end)
{
    const uint8_t *p = q->rx + *start;
    uint8_t flags = p[1];
    uint16_t cccid = get16(p + 8), ttag = get16(p + 10);
    uint32_t datao = get32(p + 12), datal = get32(p + 16);
    if (!q->r2t_len[ttag] || datao > q->r2t_len[ttag] || datal > q->r2t_len[ttag] - datao)
        return -1;
    if (take_payload(q, start, end, DATA_HLEN, q->ns + q->r2t_at[ttag] + datao, datal))
        return -1;
    if (!(flags & FLAG_LAST_PDU))
        return 0;
    q->r2t_len[ttag] = 0;
    uint8_t *rsp = answer(q);
    if (!rsp)
        return -1;
    capsule_resp(q, rsp, cccid, 0);
    piece(q, rsp, RSP_LEN);
    return 0;
}

/*
 * Serve the I/O queue on socket fd until the host closes it (or sends what this loop does not
 * answer), then close fd.  ns: the namespace's ns_size bytes; sqsize: the queue's size
 * (Connect's SQSIZE + 1); sqhd: the SQ head after Connect.  Returns the commands served, or
 * -1 if the queue's memory could not be had.
 */
long rawio_serve(int fd, uint8_t *ns, uint64_t ns_size, int qid, int sqsize, int sqhd,
                 int sq_flow_disabled)
{
    struct queue *q = calloc(1, sizeof *q);
    long commands = 0;
    if (!q) {
        close(fd);
        return -1;
    }
    *q = (struct queue){.fd = fd, .ns = ns, .ns_size = ns_size, .qid = (uint16_t)qid,
                        .sqsize = (uint16_t)sqsize, .sqhd = (uint16_t)sqhd,
                        .sq_flow_disabled = sq_flow_disabled};
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);  /* the event loop's was not */
    size_t start = 0, end = 0;
    for (;;) {
        size_t avail = end - start;
        /* A whole header, and for a capsule all its data if the buffer can hold it. */
        size_t want = CH_LEN;
        if (avail >= CH_LEN) {
            uint32_t plen = get32(q->rx + start + 4);
            want = q->rx[start + 2];
            if (q->rx[start] == PDU_CMD && plen <= RX_BUFFER)
                want = plen;
        }
        if (avail < want) {
            if (start + want > RX_BUFFER) {  /* room for the rest: move the PDU to the front */
                memmove(q->rx, q->rx + start, avail);
                start = 0, end = avail;
            }
            if (flush(q))  /* every PDU received so far answered before waiting for more */
                break;
            ssize_t got = recv(fd, q->rx + end, RX_BUFFER - end, 0);
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0)
                break;
            end += (size_t)got;
            continue;
        }
        const uint8_t *p = q->rx + start;
        uint32_t plen = get32(p + 4);
        int failed;
        if (p[0] == PDU_CMD && p[2] == CMD_HLEN && plen >= CMD_HLEN) {
            failed = command(q, &start, &end, plen);
            commands++;
        } else if (p[0] == PDU_H2C_DATA && p[2] == DATA_HLEN && plen >= DATA_HLEN) {
            failed = h2c_data(q, &start, &end);
        } else {
            failed = 1;  /* a termination request, or anything this loop does not answer */
        }
        if (failed)
            break;
        if (start == end)
            start = end = 0;
    }
    close(fd);
    free(q);
    return commands;
}
