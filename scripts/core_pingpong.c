// Round-trip latency of one cache line between CPU 0 and CPU 1 (two pinned threads taking
// turns on an atomic flag). On the shared VMs this project runs on, the hypervisor moves the
// two vCPUs between close and far placements; accel's 2-thread speed follows this number
// (README, performance). Build and run: gcc -O2 -pthread scripts/core_pingpong.c -o /tmp/pp && /tmp/pp
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
static _Atomic int flag __attribute__((aligned(64)));
#define N 200000
static void pin(int c){cpu_set_t s;CPU_ZERO(&s);CPU_SET(c,&s);pthread_setaffinity_np(pthread_self(),sizeof s,&s);}
static void* other(void* a){pin(1);for(int i=0;i<N;i++){while(atomic_load_explicit(&flag,memory_order_acquire)!=1);atomic_store_explicit(&flag,0,memory_order_release);}return 0;}
int main(){pthread_t t;pthread_create(&t,0,other,0);pin(0);struct timespec a,b;clock_gettime(CLOCK_MONOTONIC,&a);
for(int i=0;i<N;i++){atomic_store_explicit(&flag,1,memory_order_release);while(atomic_load_explicit(&flag,memory_order_acquire)!=0);}
clock_gettime(CLOCK_MONOTONIC,&b);pthread_join(t,0);double ns=((b.tv_sec-a.tv_sec)*1e9+(b.tv_nsec-a.tv_nsec))/N;printf("round trip %.0f ns\n",ns);}
