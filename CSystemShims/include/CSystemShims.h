// CSystemShims: what Swift cannot import from Glibc on its own.
// Thin by rule: one-line wrappers of macros, constants Swift cannot see, and copies of
// kernel structs whose layout shims.c checks with _Static_assert. No logic here.
#ifndef CSYSTEMSHIMS_H
#define CSYSTEMSHIMS_H

#ifdef __linux__
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/capability.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/prctl.h>
#include <netinet/in.h>

// MARK: control messages (CMSG_* are macros, invisible to Swift)
struct cmsghdr *CSystemShims_CMSG_FIRSTHDR(const struct msghdr *message);
struct cmsghdr *CSystemShims_CMSG_NXTHDR(struct msghdr *message, struct cmsghdr *header);
unsigned char *CSystemShims_CMSG_DATA(struct cmsghdr *header);
size_t CSystemShims_CMSG_SPACE(size_t length);
size_t CSystemShims_CMSG_LEN(size_t length);

// MARK: timestamping (<linux/net_tstamp.h>, <linux/errqueue.h>)
extern const int CSystemShims_SOF_TIMESTAMPING_TX_SOFTWARE;
extern const int CSystemShims_SOF_TIMESTAMPING_RX_SOFTWARE;
extern const int CSystemShims_SOF_TIMESTAMPING_SOFTWARE;
extern const int CSystemShims_SOF_TIMESTAMPING_OPT_ID;
extern const int CSystemShims_SOF_TIMESTAMPING_OPT_TSONLY;
/// cmsg type that gives one send its own OPT_ID (kernel 6.13+; absent from older headers).
extern const int CSystemShims_SCM_TS_OPT_ID;
extern const int CSystemShims_SCM_TSTAMP_SND;
extern const int CSystemShims_SO_EE_ORIGIN_LOCAL;
extern const int CSystemShims_SO_EE_ORIGIN_ICMP;
extern const int CSystemShims_SO_EE_ORIGIN_ICMP6;
extern const int CSystemShims_SO_EE_ORIGIN_TIMESTAMPING;

/// Copy of `struct scm_timestamping`: ts[0] software, ts[2] hardware.
typedef struct {
    struct timespec ts[3];
} CSystemShims_scm_timestamping;

/// Copy of `struct sock_extended_err`; the offender address follows it in the cmsg.
typedef struct {
    uint32_t ee_errno;
    uint8_t ee_origin;
    uint8_t ee_type;
    uint8_t ee_code;
    uint8_t ee_pad;
    uint32_t ee_info;
    uint32_t ee_data;
} CSystemShims_sock_extended_err;

// MARK: ICMP filters (<linux/icmp.h>, <netinet/icmp6.h>)
extern const int CSystemShims_ICMP_FILTER;
extern const int CSystemShims_ICMP6_FILTER;

/// Copy of `struct icmp_filter`: a bit set per ICMP type is a type the kernel blocks.
typedef struct {
    uint32_t data;
} CSystemShims_icmp_filter;

/// Copy of `struct icmp6_filter`.
typedef struct {
    uint32_t data[8];
} CSystemShims_icmp6_filter;

void CSystemShims_ICMP6_FILTER_SETBLOCKALL(CSystemShims_icmp6_filter *filter);
void CSystemShims_ICMP6_FILTER_SETPASS(int type, CSystemShims_icmp6_filter *filter);

// MARK: TCP_INFO (<linux/tcp.h> clashes with Glibc's tcp_info in a module header)
/// The fields of `struct tcp_info` that a handshake measurement needs.
typedef struct {
    uint8_t state;
    uint32_t rtt_us;
    uint32_t rttvar_us;
    uint32_t total_retrans;
    /// Segments sent, retransmissions included: 1 + total_retrans while only SYNs have left
    /// (the half-open probe's proof that no final ACK went out).
    uint32_t segs_out;
} CSystemShims_tcp_handshake_info;

/// getsockopt(TCP_INFO) copied into the small struct above. Returns 0 or -1 with errno.
int CSystemShims_tcp_handshake_info_read(int fd, CSystemShims_tcp_handshake_info *info);

// MARK: prctl (variadic in Glibc, so not callable from Swift)
int CSystemShims_prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5);

// MARK: NetSim: TUN device, signalfd, namespaces (ioctl is variadic: not callable from Swift)
#include <sys/signalfd.h>
#include <net/if.h>
/// ioctl with a pointer argument (TUNSETIFF with a `struct ifreq`).
int CSystemShims_ioctl_pointer(int fd, unsigned long request, void *argument);
extern const unsigned long CSystemShims_TUNSETIFF;
extern const int CSystemShims_IFF_TUN;
extern const int CSystemShims_IFF_NO_PI;
extern const int CSystemShims_CLONE_NEWNET;
int CSystemShims_setns(int fd, int nstype);
/// mallopt(M_ARENA_MAX, count): <malloc.h> is not in Swift's Glibc module.
int CSystemShims_mallopt_arena_max(int count);
#endif

#endif
