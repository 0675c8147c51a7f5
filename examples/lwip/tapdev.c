/*
 * tapdev.c -- a small lwIP netif driver over a Linux tap device (see
 * tapdev.h): what a board's Ethernet driver does, in about 100 lines.
 *
 * Why not Debian's tapif_init() (liblwip-dev 2.1.3, netif/tapif.h):
 * it corrupts the heap on every frame longer than about 590 bytes. Inside
 * Debian's liblwip, some files include glibc's <netinet/tcp.h>, which
 * defines TCP_MSS as 512 and so silently replaces lwipopts.h's 1460 in
 * those files. memp.c sizes the PBUF_POOL elements with the small value
 * (616 bytes each), pbuf.c with the large one, so pbuf_alloc(1514,
 * PBUF_POOL) hands out a single 616-byte element claiming to hold 1514
 * bytes, and tapif copies the whole frame into it (under ASan: a heap
 * overflow in pbuf_take). Any TLS handshake or full-size TCP segment
 * triggers it. The same trap waits for every lwIP application: never
 * let <netinet/tcp.h> (or anything defining TCP_MSS) into lwIP code.
 *
 * This driver avoids PBUF_POOL altogether: the reader thread reads each
 * frame into its own buffer and hands lwIP a PBUF_RAM pbuf of exactly
 * the frame's length (through netif->input = tcpip_input, which queues
 * it for the tcpip thread). Output copies the (single, with
 * LWIP_NETIF_TX_SINGLE_PBUF) pbuf chain into a buffer and write()s one
 * frame. No ETH_PAD_SIZE handling: Debian's build leaves it 0.
 */
#define _DEFAULT_SOURCE 1       /* struct ifreq, IFNAMSIZ */

#include "tapdev.h"
#include "host_task.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <net/if.h>
#include <linux/if_tun.h>

#include "lwip/etharp.h"
#include "lwip/pbuf.h"
#include "lwip/sys.h"
#include "netif/ethernet.h"

/* Longest frame taken: 1500 bytes of payload, the Ethernet header and a
 * VLAN tag (no FCS on a tap device). */
#define FRAME_MAX 1518

/* The reader's stack (a board's driver task would be given one). */
#define RX_STACK 65536

static struct {
	char ifname[IFNAMSIZ];      /* "" until configured: tap0 */
	unsigned char mac[6];
	int mac_set;
	int running;                /* fd, stop_pipe and rx_task are live */
	int fd;                     /* the tap device */
	int stop_pipe[2];           /* written by tapdev_stop() */
	struct netif *nif;
	struct host_task rx_task;
	struct tapdev_stats stats;
	unsigned char tx_frame[FRAME_MAX];   /* under the tcpip core lock */
	unsigned char rx_frame[FRAME_MAX];   /* reader thread only */
} tap;

/* A locally administered address. */
static const unsigned char default_mac[6] = { 0x02, 0x00, 0x5e, 0x10, 0x00, 0x02 };

void
tapdev_configure(const char *ifname, const unsigned char mac[6])
{
	if (ifname != NULL)
		snprintf(tap.ifname, sizeof tap.ifname, "%s", ifname);
	if (mac != NULL) {
		memcpy(tap.mac, mac, 6);
		tap.mac_set = 1;
	}
}

/* netif->linkoutput: one frame out. lwIP calls it with the core lock
 * held (from the tcpip thread or, with LWIP_TCPIP_CORE_LOCKING, from the
 * task inside a socket call), so tx_frame is never shared. */
static err_t
tapdev_linkoutput(struct netif *nif, struct pbuf *p)
{
	u16_t n;
	ssize_t w;

	(void)nif;
	if (p->tot_len > sizeof tap.tx_frame) {
		tap.stats.tx_dropped++;
		return ERR_IF;
	}
	n = pbuf_copy_partial(p, tap.tx_frame, p->tot_len, 0);
	do {
		w = write(tap.fd, tap.tx_frame, n);
	} while (w < 0 && errno == EINTR);
	if (w != (ssize_t)n) {
		tap.stats.tx_dropped++;
		return ERR_IF;
	}
	tap.stats.tx_frames++;
	tap.stats.tx_bytes += n;
	return ERR_OK;
}

static void *
tapdev_reader(void *arg)
{
	struct netif *nif = arg;
	struct pollfd pfd[2];
	struct pbuf *p;
	ssize_t n;

	pfd[0].fd = tap.fd;
	pfd[0].events = POLLIN;
	pfd[1].fd = tap.stop_pipe[0];
	pfd[1].events = POLLIN;
	for (;;) {
		pfd[0].revents = pfd[1].revents = 0;
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[1].revents != 0)
			break;
		if (pfd[0].revents & (POLLERR | POLLNVAL))
			break;
		if (!(pfd[0].revents & POLLIN))
			continue;
		n = read(tap.fd, tap.rx_frame, sizeof tap.rx_frame);
		if (n <= 0)
			continue;
		/* PBUF_RAM of the frame's size: never PBUF_POOL here (see the
		 * comment at the top). */
		p = pbuf_alloc(PBUF_RAW, (u16_t)n, PBUF_RAM);
		if (p == NULL) {
			tap.stats.rx_dropped++;
			continue;
		}
		pbuf_take(p, tap.rx_frame, (u16_t)n);
		if (nif->input(p, nif) != ERR_OK) {
			pbuf_free(p);
			tap.stats.rx_dropped++;
			continue;
		}
		tap.stats.rx_frames++;
		tap.stats.rx_bytes += (unsigned long)n;
	}
	return NULL;
}

err_t
tapdev_init(struct netif *nif)
{
	struct ifreq ifr;

	if (tap.running)
		return ERR_IF;          /* one tap netif per process */
	if (tap.ifname[0] == '\0')
		snprintf(tap.ifname, sizeof tap.ifname, "tap0");
	if (!tap.mac_set)
		memcpy(tap.mac, default_mac, 6);
	/* TUNSETIFF would create a missing device, one that nothing on the
	 * host side is configured for: insist on an existing one. */
	if (if_nametoindex(tap.ifname) == 0) {
		fprintf(stderr, "tapdev: no interface %s in this network "
			"namespace (ip tuntap add dev %s mode tap)\n", tap.ifname,
			tap.ifname);
		return ERR_IF;
	}
	tap.fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (tap.fd < 0) {
		fprintf(stderr, "tapdev: /dev/net/tun: %s\n", strerror(errno));
		return ERR_IF;
	}
	memset(&ifr, 0, sizeof ifr);
	memcpy(ifr.ifr_name, tap.ifname, sizeof ifr.ifr_name);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	if (ioctl(tap.fd, TUNSETIFF, &ifr) < 0) {
		fprintf(stderr, "tapdev: attach to %s: %s\n", tap.ifname,
			strerror(errno));
		goto fail;
	}
	if (pipe(tap.stop_pipe) != 0)
		goto fail;
	tap.running = 1;
	nif->state = &tap;
	nif->name[0] = 't';
	nif->name[1] = 'p';
	nif->output = etharp_output;
	nif->linkoutput = tapdev_linkoutput;
	nif->mtu = 1500;
	nif->hwaddr_len = 6;
	memcpy(nif->hwaddr, tap.mac, 6);
	nif->flags = NETIF_FLAG_BROADCAST | NETIF_FLAG_ETHARP |
		NETIF_FLAG_ETHERNET;
	tap.nif = nif;
	if (host_task_start(&tap.rx_task, RX_STACK, tapdev_reader, nif) != 0) {
		fprintf(stderr, "tapdev: cannot start the reader thread\n");
		close(tap.stop_pipe[0]);
		close(tap.stop_pipe[1]);
		tap.running = 0;
		goto fail;
	}
	return ERR_OK;
fail:
	close(tap.fd);
	return ERR_IF;
}

void
tapdev_stop(void)
{
	ssize_t w;

	if (!tap.running)
		return;
	do {
		w = write(tap.stop_pipe[1], "x", 1);
	} while (w < 0 && errno == EINTR);
	host_task_join(&tap.rx_task);
	close(tap.stop_pipe[1]);
	close(tap.stop_pipe[0]);
	close(tap.fd);
	tap.running = 0;
}

void
tapdev_get_stats(struct tapdev_stats *out)
{
	*out = tap.stats;
	out->rx_stack_peak = host_task_peak(&tap.rx_task);
	out->rx_stack_size = tap.rx_task.size;
}
