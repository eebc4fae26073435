// SPDX-License-Identifier: MIT
// weft/detail/intrusive_list.hpp -- a doubly linked list through two pointer
// members of its nodes: no allocation, O(1) unlink of any node.
//
// Not part of the public API.  Not thread-safe: every user guards its list
// with a lock of its own (a wait_list's spin lock, the runtime's
// blocked_mutex, a task group's mutex).  A node may sit in several lists at
// once when each list links it through its own pair of members.
#pragma once

#include "weft/version.hpp"  // first: weft's C++20 check

namespace weft::detail {

template <class Node, Node* Node::* Next, Node* Node::* Prev>
struct intrusive_list {
  Node* head = nullptr;
  Node* tail = nullptr;

  bool empty() const noexcept { return head == nullptr; }

  void push_back(Node* n) noexcept {
    n->*Next = nullptr;
    n->*Prev = tail;
    if (tail != nullptr) {
      tail->*Next = n;
    } else {
      head = n;
    }
    tail = n;
  }

  void push_front(Node* n) noexcept {
    n->*Prev = nullptr;
    n->*Next = head;
    if (head != nullptr) {
      head->*Prev = n;
    } else {
      tail = n;
    }
    head = n;
  }

  // `n` must be in this list.
  void erase(Node* n) noexcept {
    if (n->*Prev != nullptr) {
      n->*Prev->*Next = n->*Next;
    } else {
      head = n->*Next;
    }
    if (n->*Next != nullptr) {
      n->*Next->*Prev = n->*Prev;
    } else {
      tail = n->*Prev;
    }
    n->*Next = nullptr;
    n->*Prev = nullptr;
  }
};

}  // namespace weft::detail
