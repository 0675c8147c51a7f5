/*
 * host_task.c -- threads with painted stacks (see host_task.h).
 */
#define _GNU_SOURCE 1           /* pthread_getattr_np */

#include "host_task.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define PAINT 0xA5
#define GUARD 4096              /* a PROT_NONE page below the stack */

int
host_task_start(struct host_task *t, size_t size, void *(*fn)(void *),
	void *arg)
{
	pthread_attr_t attr;
	void *mem;
	int r;

	memset(t, 0, sizeof *t);
	if (size < 16384)
		size = 16384;
	size = (size + 4095) & ~(size_t)4095;
	/* mmap: page-aligned, and the guard page turns an overflow into a
	 * crash instead of silent corruption (a thread given its own stack
	 * gets no guard from glibc). */
	mem = mmap(NULL, GUARD + size, PROT_READ | PROT_WRITE,
		MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return -1;
	if (mprotect(mem, GUARD, PROT_NONE) != 0) {
		munmap(mem, GUARD + size);
		return -1;
	}
	t->stack = (unsigned char *)mem + GUARD;
	t->size = size;
	memset(t->stack, PAINT, size);
	if (pthread_attr_init(&attr) != 0) {
		munmap(mem, GUARD + size);
		t->stack = NULL;
		return -1;
	}
	r = pthread_attr_setstack(&attr, t->stack, size);
	if (r == 0)
		r = pthread_create(&t->thread, &attr, fn, arg);
	pthread_attr_destroy(&attr);
	if (r != 0) {
		munmap(mem, GUARD + size);
		t->stack = NULL;
		return -1;
	}
	t->started = 1;
	return 0;
}

int
host_task_join(struct host_task *t)
{
	if (!t->started)
		return -1;
	t->started = 0;
	if (pthread_join(t->thread, NULL) != 0)
		return -1;
	/* The stack stays mapped: host_task_peak() may still read it (the
	 * process exits soon after). */
	return 0;
}

void
host_task_free(struct host_task *t)
{
	if (t->stack != NULL && !t->started)
		munmap(t->stack - GUARD, GUARD + t->size);
	t->stack = NULL;
}

size_t
host_task_peak(const struct host_task *t)
{
	size_t i;

	if (t->stack == NULL)
		return 0;
	/* The stack grows down from stack + size. */
	for (i = 0; i < t->size && t->stack[i] == PAINT; i++)
		;
	return t->size - i;
}

size_t
host_thread_stack_used(size_t *stack_size)
{
	pthread_attr_t attr;
	void *addr = NULL;
	size_t size = 0, i;
	const volatile unsigned char *s;
	const unsigned char *here = (const unsigned char *)&attr;

	if (stack_size != NULL)
		*stack_size = 0;
	if (pthread_getattr_np(pthread_self(), &attr) != 0)
		return 0;
	if (pthread_attr_getstack(&attr, &addr, &size) != 0) {
		pthread_attr_destroy(&attr);
		return 0;
	}
	pthread_attr_destroy(&attr);
	s = addr;
	/* Below our own frame only: scanning upwards from the low end stops
	 * at the deepest byte ever written. */
	for (i = 0; s + i < here && s[i] == 0; i++)
		;
	if (stack_size != NULL)
		*stack_size = size;
	return size - i;
}

static void *
nothing(void *arg)
{
	return arg;
}

size_t
host_task_baseline(void)
{
	struct host_task t;
	size_t used;

	if (host_task_start(&t, 16384, nothing, NULL) != 0)
		return 0;
	if (host_task_join(&t) != 0)
		return 0;
	used = host_task_peak(&t);
	host_task_free(&t);
	return used;
}

static void *
probe(void *arg)
{
	*(size_t *)arg = host_thread_stack_used(NULL);
	return NULL;
}

size_t
host_thread_baseline(void)
{
	pthread_t th;
	size_t used = 0;

	if (pthread_create(&th, NULL, probe, &used) != 0)
		return 0;
	pthread_join(th, NULL);
	return used;
}
