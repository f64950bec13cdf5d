#ifdef __linux__
#include "CSystemShims.h"
#include <linux/tcp.h>
#include <linux/net_tstamp.h>
#include <linux/errqueue.h>
#include <linux/icmp.h>
#include <netinet/icmp6.h>

struct cmsghdr *CSystemShims_CMSG_FIRSTHDR(const struct msghdr *message) { return CMSG_FIRSTHDR(message); }
struct cmsghdr *CSystemShims_CMSG_NXTHDR(struct msghdr *message, struct cmsghdr *header) { return CMSG_NXTHDR(message, header); }
unsigned char *CSystemShims_CMSG_DATA(struct cmsghdr *header) { return CMSG_DATA(header); }
size_t CSystemShims_CMSG_SPACE(size_t length) { return CMSG_SPACE(length); }
size_t CSystemShims_CMSG_LEN(size_t length) { return CMSG_LEN(length); }

const int CSystemShims_SOF_TIMESTAMPING_TX_SOFTWARE = SOF_TIMESTAMPING_TX_SOFTWARE;
const int CSystemShims_SOF_TIMESTAMPING_RX_SOFTWARE = SOF_TIMESTAMPING_RX_SOFTWARE;
const int CSystemShims_SOF_TIMESTAMPING_SOFTWARE = SOF_TIMESTAMPING_SOFTWARE;
const int CSystemShims_SOF_TIMESTAMPING_OPT_ID = SOF_TIMESTAMPING_OPT_ID;
const int CSystemShims_SOF_TIMESTAMPING_OPT_TSONLY = SOF_TIMESTAMPING_OPT_TSONLY;
#ifdef SCM_TS_OPT_ID
const int CSystemShims_SCM_TS_OPT_ID = SCM_TS_OPT_ID;
#else
const int CSystemShims_SCM_TS_OPT_ID = 81; // include/uapi/asm-generic/socket.h, Linux 6.13
#endif
const int CSystemShims_SCM_TSTAMP_SND = SCM_TSTAMP_SND;
const int CSystemShims_SO_EE_ORIGIN_LOCAL = SO_EE_ORIGIN_LOCAL;
const int CSystemShims_SO_EE_ORIGIN_ICMP = SO_EE_ORIGIN_ICMP;
const int CSystemShims_SO_EE_ORIGIN_ICMP6 = SO_EE_ORIGIN_ICMP6;
const int CSystemShims_SO_EE_ORIGIN_TIMESTAMPING = SO_EE_ORIGIN_TIMESTAMPING;
const int CSystemShims_ICMP_FILTER = ICMP_FILTER;
const int CSystemShims_ICMP6_FILTER = ICMP6_FILTER;

_Static_assert(sizeof(CSystemShims_scm_timestamping) == sizeof(struct scm_timestamping), "scm_timestamping layout");
_Static_assert(sizeof(CSystemShims_sock_extended_err) == sizeof(struct sock_extended_err), "sock_extended_err size");
_Static_assert(offsetof(CSystemShims_sock_extended_err, ee_info) == offsetof(struct sock_extended_err, ee_info), "ee_info");
_Static_assert(offsetof(CSystemShims_sock_extended_err, ee_data) == offsetof(struct sock_extended_err, ee_data), "ee_data");
_Static_assert(sizeof(CSystemShims_icmp_filter) == sizeof(struct icmp_filter), "icmp_filter layout");
_Static_assert(sizeof(CSystemShims_icmp6_filter) == sizeof(struct icmp6_filter), "icmp6_filter layout");

void CSystemShims_ICMP6_FILTER_SETBLOCKALL(CSystemShims_icmp6_filter *filter) { ICMP6_FILTER_SETBLOCKALL((struct icmp6_filter *)filter); }
void CSystemShims_ICMP6_FILTER_SETPASS(int type, CSystemShims_icmp6_filter *filter) { ICMP6_FILTER_SETPASS(type, (struct icmp6_filter *)filter); }

int CSystemShims_tcp_handshake_info_read(int fd, CSystemShims_tcp_handshake_info *info) {
    struct tcp_info kernel = {0};
    socklen_t length = sizeof(kernel);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &kernel, &length) != 0) return -1;
    *info = (CSystemShims_tcp_handshake_info){ kernel.tcpi_state, kernel.tcpi_rtt, kernel.tcpi_rttvar, kernel.tcpi_total_retrans, kernel.tcpi_segs_out };
    return 0;
}

int CSystemShims_prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5) {
    return prctl(option, arg2, arg3, arg4, arg5);
}

#include <sys/ioctl.h>
#include <sched.h>
#include <linux/if_tun.h>
int CSystemShims_ioctl_pointer(int fd, unsigned long request, void *argument) { return ioctl(fd, request, argument); }
const unsigned long CSystemShims_TUNSETIFF = TUNSETIFF;
const int CSystemShims_IFF_TUN = IFF_TUN;
const int CSystemShims_IFF_NO_PI = IFF_NO_PI;
const int CSystemShims_CLONE_NEWNET = CLONE_NEWNET;
int CSystemShims_setns(int fd, int nstype) { return setns(fd, nstype); }
#include <malloc.h>
int CSystemShims_mallopt_arena_max(int count) { return mallopt(M_ARENA_MAX, count); }
#endif
